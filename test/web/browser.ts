/**
 * The browser harness of the web tests (no tests here): the real Chromium of this machine driven by
 * playwright-core. One browser process per test run, started on first use; each launchBrowser() gets a
 * fresh context (no shared storage) that accepts the relay's self-signed certificate. Every page's
 * console errors, uncaught exceptions, failed subresource checks and CSP violations are collected, so a
 * test can assert there were none. A root `after` closes whatever is still open.
 */
import { expect } from "chai";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

export const CHROMIUM_PATH = "/usr/bin/chromium";

/** Headless, no sandbox (tests run as root in a container), and nothing that calls home or updates itself. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** What went wrong on one page, as the browser reported it. */
export interface PageProblems {
  /** console messages of type "error" (failed loads, SRI refusals, CSP refusals, logged errors) */
  consoleErrors: string[];
  /** uncaught exceptions and unhandled rejections */
  pageErrors: string[];
  /** securitypolicyviolation events: "<directive> blocked <uri>" */
  cspViolations: string[];
}

export interface WatchedPage {
  page: Page;
  problems: PageProblems;
}

export interface BrowserSession {
  browser: Browser;
  context: BrowserContext;
  /** A new tab of this context whose problems are collected from its first request on. */
  newPage(): Promise<WatchedPage>;
  close(): Promise<void>;
}

let shared: Promise<Browser> | null = null;
const openSessions = new Set<BrowserSession>();

function sharedBrowser(): Promise<Browser> {
  shared ??= chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true }).catch((error: unknown) => {
    shared = null;
    throw new Error(`could not start Chromium at ${CHROMIUM_PATH} (apt-get install -y chromium): ${error instanceof Error ? error.message : String(error)}`);
  });
  return shared;
}

/** Name of the binding through which pages report CSP violations (set up before any page script runs). */
const CSP_BINDING = "__ethChatTestCspViolation";

/** A fresh browser context over the shared Chromium; closed by close() or at the end of the run. */
export async function launchBrowser(): Promise<BrowserSession> {
  const browser = await sharedBrowser();
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  // Injected by the DevTools protocol, not as a page script, so the page's own CSP does not block it.
  const byPage = new WeakMap<Page, PageProblems>();
  await context.exposeBinding(CSP_BINDING, ({ page }, violation: string) => {
    byPage.get(page)?.cspViolations.push(String(violation));
  });
  await context.addInitScript(`document.addEventListener("securitypolicyviolation", (e) => {
    globalThis[${JSON.stringify(CSP_BINDING)}](e.effectiveDirective + " blocked " + (e.blockedURI || "inline"));
  });`);
  const session: BrowserSession = {
    browser,
    context,
    async newPage() {
      const page = await context.newPage();
      const problems: PageProblems = { consoleErrors: [], pageErrors: [], cspViolations: [] };
      byPage.set(page, problems);
      page.on("console", (message) => {
        if (message.type() === "error") problems.consoleErrors.push(message.text());
      });
      page.on("pageerror", (error) => problems.pageErrors.push(error.message));
      return { page, problems };
    },
    async close() {
      openSessions.delete(session);
      await context.close().catch(() => undefined);
    },
  };
  openSessions.add(session);
  return session;
}

/** Fails naming every problem the page had. */
export function expectNoProblems(watched: WatchedPage | PageProblems, what = "the page"): void {
  const problems = "problems" in watched ? watched.problems : watched;
  expect(problems, `${what} had problems`).to.deep.equal({ consoleErrors: [], pageErrors: [], cspViolations: [] });
}

/** Closes every open context and the browser. */
export async function closeBrowser(): Promise<void> {
  await Promise.all([...openSessions].map((session) => session.close()));
  const browser = shared;
  shared = null;
  if (browser) await (await browser.catch(() => null))?.close();
}

after(async function () {
  this.timeout(30_000);
  await closeBrowser();
});
