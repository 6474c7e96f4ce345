/**
 * Driving the web client as a person does, in the real Chromium (no tests here): settings, register, log in,
 * open a chat, send, read the timeline. Every step goes through the page's own labelled controls.
 */
import { expect } from "chai";
import type { Page } from "playwright-core";
import { expectNoProblems, launchBrowser, type BrowserSession, type WatchedPage } from "./browser";
import { startWebStack, type WebStack } from "./stack";

/** How long a step that crosses the relay and the chain may take on a busy machine. */
export const STEP_MS = 60_000;

export interface BrowserUser {
  username: string;
  password: string;
  session: BrowserSession;
  watched: WatchedPage;
  page: Page;
}

/** A fresh browser profile on the app, with the test chain's RPC and contract saved in the settings. */
export async function openApp(stack: WebStack): Promise<{ session: BrowserSession; watched: WatchedPage; page: Page }> {
  const session = await launchBrowser();
  const watched = await session.newPage();
  const page = watched.page;
  page.setDefaultTimeout(STEP_MS);
  await page.goto(stack.url);
  await saveSettings(page, stack);
  return { session, watched, page };
}

export async function saveSettings(page: Page, stack: WebStack): Promise<void> {
  await page.getByLabel("Chain RPC URL").fill(stack.rpcUrl);
  await page.getByLabel("ChatRegistry contract").fill(stack.contract);
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByRole("navigation", { name: "Account" }).waitFor();
}

/** Registers `username` in a fresh profile; resolves once the main screen shows with messaging started. */
export async function registerInBrowser(stack: WebStack, username: string, password = `pw-${username}-correct horse`): Promise<BrowserUser> {
  const { session, watched, page } = await openApp(stack);
  await page.getByRole("navigation", { name: "Account" }).getByRole("button", { name: "Register" }).click();
  const form = page.getByRole("form", { name: "Register" });
  await form.getByLabel("Username", { exact: true }).fill(username);
  await form.getByLabel("Password", { exact: true }).fill(password);
  await form.getByLabel("Password again").fill(password);
  await form.getByRole("button", { name: "Register" }).click();
  await waitForMessaging(page);
  return { username, password, session, watched, page };
}

/** Logs `user` in again on its own profile (after a reload or a logout-free close). */
export async function loginInBrowser(user: Pick<BrowserUser, "username" | "password" | "page">): Promise<void> {
  const form = user.page.getByRole("form", { name: "Log in" });
  await form.getByLabel("Username").fill(user.username);
  await form.getByLabel("Password").fill(user.password);
  await form.getByRole("button", { name: "Log in" }).click();
  await waitForMessaging(user.page);
}

export async function waitForMessaging(page: Page): Promise<void> {
  await page.getByRole("button", { name: "New chat" }).and(page.locator(":enabled")).waitFor({ timeout: STEP_MS });
}

export async function startChat(page: Page, peer: string): Promise<void> {
  await page.getByRole("button", { name: "New chat" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Username").fill(peer);
  await dialog.getByRole("button", { name: "Open chat" }).click();
  await dialog.waitFor({ state: "detached" });
  await page.getByRole("textbox", { name: `Message to ${peer}` }).waitFor();
}

/** Opens the conversation titled `title` from the list. */
export async function openConversation(page: Page, title: string): Promise<void> {
  await page.getByRole("navigation", { name: "Conversations" }).getByText(title, { exact: false }).first().click();
  await page.getByRole("textbox", { name: `Message to ${title}` }).waitFor();
}

export async function sendText(page: Page, title: string, body: string): Promise<void> {
  const box = page.getByRole("textbox", { name: `Message to ${title}` });
  await box.fill(body);
  await box.press("Enter");
}

/** The text of every message item in the open conversation, in order. */
export async function timelineTexts(page: Page, title: string): Promise<string[]> {
  return page.getByRole("list", { name: `Messages with ${title}` }).locator("li").allInnerTexts();
}

/** Waits until a message whose text contains `body` shows in the open conversation with `title`. */
export async function waitForText(page: Page, title: string, body: string, timeout = STEP_MS): Promise<void> {
  await page.getByRole("list", { name: `Messages with ${title}` }).locator("li", { hasText: body }).first().waitFor({ timeout });
}

export async function closeUser(user: { session: BrowserSession }): Promise<void> {
  await user.session.close();
}

export function expectContains(texts: string[], body: string): void {
  expect(texts.some((t) => t.includes(body)), `"${body}" in ${JSON.stringify(texts)}`).to.equal(true);
}

/**
 * expectNoProblems for a page opened with openApp: its settings screen first tried the default RPC
 * (127.0.0.1:8545), which no test runs, and the browser logs that refused connection; nothing else may show.
 */
export function expectNoProblemsBesideDefaultRpc(watched: WatchedPage, what = "the page"): void {
  const { consoleErrors, pageErrors, cspViolations } = watched.problems;
  expect(consoleErrors.filter((e) => !e.includes("net::ERR_CONNECTION_REFUSED")), `${what}: console errors`).to.deep.equal([]);
  expectNoProblems({ consoleErrors: [], pageErrors, cspViolations }, what);
}

/**
 * The stack of one describe block and the browser users its tests open: started in a before hook, and
 * every user's browser closed, then the stack stopped, in an after hook.
 */
export function useWebStack(): { stack: () => WebStack; users: BrowserUser[] } {
  let stack: WebStack | undefined;
  const users: BrowserUser[] = [];
  before(async () => {
    stack = await startWebStack();
  });
  after(async () => {
    for (const u of users) await u.session.close().catch(() => undefined);
    await stack?.stop();
  });
  return {
    stack: () => {
      if (!stack) throw new Error("the web stack is not started yet");
      return stack;
    },
    users,
  };
}
