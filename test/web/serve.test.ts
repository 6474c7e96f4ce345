/**
 * The web client as a browser gets it, in the real Chromium against a real relay process (TLS), chain and
 * MariaDB: the page loads with no console error and no CSP violation; the CSP and the other headers are on
 * every answer; index.html pins its assets by SRI and the browser refuses a tampered copy; an inline script
 * injected into the page does not run; /client-config.json answers the relay's deployment; the page's own
 * JavaScript opens the relay's WebSocket with the session token as a subprotocol, which the relay never
 * echoes, and a wrong token is refused with 401 before the upgrade.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import WebSocket from "ws";
import { WS_PATH, WS_SUBPROTOCOL } from "../../protocol/wire";
import { DEFAULT_WEB_CONNECT_SRC } from "../../relay/config";
import { webClientCsp } from "../../relay/http/web-client";
import { spawnRelay, relayEnv, startRelayProcess } from "../helpers/relay-process";
import { freePort } from "../helpers/ports";
import { newTestUser, uniqueUsername } from "../helpers/users";
import { expectNoProblems, launchBrowser, type BrowserSession, type WatchedPage } from "./browser";
import { registerAndLogin, startWebStack, type WebStack } from "./stack";

/** The script and stylesheet index.html names, with their integrity values. */
function pinnedAssets(html: string): { script: { src: string; integrity: string }; style: { href: string; integrity: string } } {
  const script = /<script type="module" src="([^"]+)" integrity="([^"]+)" crossorigin="anonymous"><\/script>/.exec(html);
  const style = /<link rel="stylesheet" href="([^"]+)" integrity="([^"]+)" crossorigin="anonymous">/.exec(html);
  if (!script || !style) throw new Error(`index.html does not pin its script and stylesheet:\n${html}`);
  return { script: { src: script[1], integrity: script[2] }, style: { href: style[1], integrity: style[2] } };
}

/** Whether the app's script ran: it put something into the body beyond the <noscript> of index.html. */
async function appRendered(watched: WatchedPage): Promise<boolean> {
  return watched.page.evaluate(() => {
    const body = (globalThis as any).document.body;
    return [...body.children].some((element: any) => element.tagName !== "NOSCRIPT");
  });
}

describe("web client served by the relay (real Chromium)", function () {
  this.timeout(300_000);
  let stack: WebStack;
  let browser: BrowserSession;
  let token: string;
  let username: string;

  before(async () => {
    stack = await startWebStack();
    browser = await launchBrowser();
    const user = newTestUser(uniqueUsername("web"));
    username = user.username;
    token = await registerAndLogin(stack, user);
    // The test chain's settings, as a user would have saved them: the page then calls no RPC that is not running.
    await browser.context.addInitScript(`localStorage.setItem("eth-chat:settings", ${JSON.stringify(JSON.stringify({ rpcUrl: stack.rpcUrl, contract: stack.contract }))});`);
  });

  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it("loads with no console error, no uncaught exception and no CSP violation, and its script runs", async () => {
    const watched = await browser.newPage();
    const response = await watched.page.goto(stack.url, { waitUntil: "load" });
    expect(response?.status()).to.equal(200);
    await watched.page.waitForFunction(() => [...(globalThis as any).document.body.children].some((e: any) => e.tagName !== "NOSCRIPT"), null, { timeout: 15_000 });
    // Late errors (a rejected fetch, a refused connection) show up within a moment of load.
    await watched.page.waitForTimeout(500);
    expectNoProblems(watched);
    await watched.page.close();
  });

  it("sends the CSP, nosniff, no-referrer and cache headers with the page and every asset; nothing else of the folder is served", async () => {
    const csp =
      "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; " +
      "connect-src 'self' http://127.0.0.1:* http://localhost:* https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    expect(webClientCsp(DEFAULT_WEB_CONNECT_SRC)).to.equal(csp);
    const relay = stack.relayProcess;
    const page = await relay.request("GET", "/");
    expect(page.status).to.equal(200);
    expect(page.headers["content-type"]).to.equal("text/html; charset=utf-8");
    expect(page.headers["cache-control"]).to.equal("no-cache");
    const { script, style } = pinnedAssets(page.body);
    for (const [pathname, type, cache] of [
      ["/", "text/html; charset=utf-8", "no-cache"],
      ["/index.html", "text/html; charset=utf-8", "no-cache"],
      [script.src, "text/javascript; charset=utf-8", "public, max-age=31536000, immutable"],
      [style.href, "text/css; charset=utf-8", "public, max-age=31536000, immutable"],
      ["/client-config.json", "application/json; charset=utf-8", "no-cache"],
    ]) {
      const answer = await relay.request("GET", pathname);
      expect(answer.status, pathname).to.equal(200);
      expect(answer.headers["content-security-policy"], pathname).to.equal(csp);
      expect(answer.headers["x-content-type-options"], pathname).to.equal("nosniff");
      expect(answer.headers["referrer-policy"], pathname).to.equal("no-referrer");
      expect(answer.headers["content-type"], pathname).to.equal(type);
      expect(answer.headers["cache-control"], pathname).to.equal(cache);
    }
    // Not index.html or a hashed asset: the relay's JSON 404, however the path is spelt.
    for (const pathname of ["/eth-chat-web-build.json", "/web/", "/main.js", "/%2e%2e/package.json", "/..%2fpackage.json", `${script.src}/`, `${script.src.toUpperCase()}`, "/.env"]) {
      const answer = await relay.request("GET", pathname);
      expect(answer.status, pathname).to.equal(404);
      expect(answer.body?.error?.code, pathname).to.equal("NOT_FOUND");
    }
    // An existing route of the relay still answers as before.
    expect((await relay.request("GET", "/v1/info")).status).to.equal(200);
  });

  it("pins the script and stylesheet in index.html by their sha384, as the browser receives them", async () => {
    const html = (await browser.context.request.get(stack.url)).text();
    const { script, style } = pinnedAssets(await html);
    for (const { url, integrity } of [
      { url: script.src, integrity: script.integrity },
      { url: style.href, integrity: style.integrity },
    ]) {
      const bytes = await (await browser.context.request.get(new URL(url, stack.url).toString())).body();
      expect(integrity, url).to.equal(`sha384-${createHash("sha384").update(bytes).digest("base64")}`);
      // The same bytes as the build wrote.
      expect(bytes.equals(readFileSync(path.join(stack.build.outDir, url.slice(1)))), url).to.equal(true);
    }
    expect(createHash("sha256").update(readFileSync(path.join(stack.build.outDir, script.src.slice(1)))).digest("hex")).to.equal(stack.build.bundleSha256);
  });

  it("refuses a tampered copy of the script (SRI): it does not run, and the browser says why", async () => {
    const { script } = pinnedAssets(readFileSync(path.join(stack.build.outDir, "index.html"), "utf8"));
    const serve = async (watched: WatchedPage, tamper: boolean) => {
      await watched.page.route(`**${script.src}`, async (route) => {
        const original = await route.fetch();
        const headers = { ...original.headers() };
        delete headers["content-encoding"];
        delete headers["content-length"];
        const body = await original.body();
        await route.fulfill({
          status: original.status(),
          headers,
          body: tamper ? Buffer.concat([Buffer.from("globalThis.__tampered = true;\n"), body]) : body,
        });
      });
      await watched.page.goto(stack.url, { waitUntil: "load" });
      await watched.page.waitForTimeout(500);
    };

    // Control: the same interception passing the bytes unchanged lets the script run.
    const control = await browser.newPage();
    await serve(control, false);
    expect(await appRendered(control)).to.equal(true);
    expectNoProblems(control);
    await control.page.close();

    const watched = await browser.newPage();
    await serve(watched, true);
    expect(await watched.page.evaluate(() => (globalThis as any).__tampered)).to.equal(undefined);
    expect(await appRendered(watched)).to.equal(false);
    expect(watched.problems.consoleErrors.join("\n")).to.match(/integrity/i);
    await watched.page.close();
  });

  it("does not run an inline script or event handler injected into the page (CSP), and reports the violations", async () => {
    const watched = await browser.newPage();
    await watched.page.goto(stack.url, { waitUntil: "load" });
    await watched.page.evaluate(() => {
      const document = (globalThis as any).document;
      const script = document.createElement("script");
      script.textContent = "globalThis.__inlineRan = true;";
      document.head.append(script);
      const handler = document.createElement("img");
      handler.setAttribute("src", "data:,");
      handler.setAttribute("onerror", "globalThis.__handlerRan = true");
      handler.setAttribute("onload", "globalThis.__handlerRan = true");
      document.body.append(handler);
    });
    await watched.page.waitForTimeout(300);
    const ran = await watched.page.evaluate(() => [(globalThis as any).__inlineRan, (globalThis as any).__handlerRan]);
    expect(ran).to.deep.equal([undefined, undefined]);
    expect(watched.problems.cspViolations).to.include("script-src-elem blocked inline");
    expect(watched.problems.cspViolations).to.include("script-src-attr blocked inline");
    await watched.page.close();
  });

  it("answers /client-config.json with the relay's deployment, to the page's own fetch", async () => {
    const watched = await browser.newPage();
    await watched.page.goto(stack.url, { waitUntil: "load" });
    const config = await watched.page.evaluate(async () => (await fetch("/client-config.json")).json());
    expect(config).to.deep.equal({ chainId: stack.chainId.toString(), contractAddress: stack.contract });
    expectNoProblems(watched);
    await watched.page.close();
  });

  it("lets the page call the user's own chain RPC on this machine (connect-src), and nothing the CSP does not name", async () => {
    const watched = await browser.newPage();
    await watched.page.goto(stack.url, { waitUntil: "load" });
    const chainId = await watched.page.evaluate(async (rpcUrl) => {
      const response = await fetch(rpcUrl, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }) });
      return BigInt(((await response.json()) as { result: string }).result).toString();
    }, stack.rpcUrl);
    expect(chainId).to.equal(stack.chainId.toString());
    expectNoProblems(watched);
    // ws: to another origin is in no connect-src source: refused before any request.
    const refused = await watched.page.evaluate(
      () =>
        new Promise<string>((resolve) => {
          try {
            const ws = new (globalThis as any).WebSocket("ws://example.invalid/");
            ws.onopen = () => resolve("opened");
            ws.onerror = () => resolve("error");
          } catch (error) {
            resolve((error as Error).name);
          }
        }),
    );
    // Older Chromium threw at once; newer ones fail the connection: never opened either way.
    expect(refused).to.be.oneOf(["SecurityError", "error"]);
    expect(watched.problems.cspViolations).to.deep.equal(["connect-src blocked ws://example.invalid/"]);
    await watched.page.close();
  });

  it("the page's JavaScript opens the relay's WebSocket with the token as a subprotocol; a wrong token is refused", async () => {
    const watched = await browser.newPage();
    await watched.page.goto(stack.url, { waitUntil: "load" });
    const opened = await watched.page.evaluate(
      ({ token, wsPath, username }) =>
        new Promise<{ open: boolean; protocol?: string; answer?: unknown; code?: number }>((resolve) => {
          const ws = new (globalThis as any).WebSocket(`wss://${(globalThis as any).location.host}${wsPath}`, ["eth-chat", `bearer.${token}`]);
          ws.onopen = () => ws.send(JSON.stringify({ type: "presence", user: username }));
          // Other frames (ready, a backlog) may come first: the presence answer is the one asked for.
          ws.onmessage = (event: any) => {
            const frame = JSON.parse(event.data);
            if (frame.type !== "presence") return;
            resolve({ open: true, protocol: ws.protocol, answer: frame });
            ws.close();
          };
          ws.onclose = (event: any) => resolve({ open: false, code: event.code });
        }),
      { token, wsPath: WS_PATH, username },
    );
    expect(opened).to.deep.include({ open: true, protocol: WS_SUBPROTOCOL });
    expect(opened.answer).to.deep.include({ type: "presence", user: username });
    expectNoProblems(watched);

    const refused = await watched.page.evaluate(
      ({ wsPath }) =>
        new Promise<{ open: boolean; code?: number }>((resolve) => {
          const ws = new (globalThis as any).WebSocket(`wss://${(globalThis as any).location.host}${wsPath}`, ["eth-chat", "bearer.not-a-session-token"]);
          ws.onopen = () => resolve({ open: true });
          ws.onclose = (event: any) => resolve({ open: false, code: event.code });
        }),
      { wsPath: WS_PATH },
    );
    expect(refused).to.deep.equal({ open: false, code: 1006 });
    await watched.page.close();
  });

  describe("the upgrade with the token as a subprotocol (ws client)", () => {
    const wsUrl = () => `${stack.relayProcess.url.replace(/^https/, "wss")}${WS_PATH}`;
    const tlsOptions = () => ({ ca: stack.relayProcess.certificate!, checkServerIdentity: () => undefined });

    /** Opens a socket; resolves with the upgrade's status, its response headers and (when refused) body. */
    function upgrade(protocols: string[], headers: Record<string, string> = {}) {
      return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string; protocol: string }>((resolve, reject) => {
        const ws = new WebSocket(wsUrl(), protocols, { ...tlsOptions(), headers });
        ws.once("upgrade", (response) => {
          ws.once("open", () => {
            resolve({ status: 101, headers: response.headers, body: "", protocol: ws.protocol });
            ws.close();
          });
        });
        ws.once("unexpected-response", (_request, response) => {
          let body = "";
          response.on("data", (chunk) => (body += chunk));
          response.on("end", () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body, protocol: "" }));
        });
        ws.once("error", (error) => reject(error));
      });
    }

    it("selects eth-chat and never echoes the token", async () => {
      const answer = await upgrade([WS_SUBPROTOCOL, `bearer.${token}`]);
      expect(answer.status).to.equal(101);
      expect(answer.protocol).to.equal(WS_SUBPROTOCOL);
      expect(answer.headers["sec-websocket-protocol"]).to.equal(WS_SUBPROTOCOL);
      expect(JSON.stringify(answer.headers)).not.to.include(token);
      // The token's own position among the offers does not matter, nor do other offers.
      expect((await upgrade([`bearer.${token}`, "other", WS_SUBPROTOCOL])).protocol).to.equal(WS_SUBPROTOCOL);
    });

    it("refuses a wrong, missing or lone token with 401 and the relay's JSON error, echoing nothing", async () => {
      const wrong = `${token.slice(0, -4)}AAAA`;
      for (const protocols of [[WS_SUBPROTOCOL, `bearer.${wrong}`], [`bearer.${token}`], [WS_SUBPROTOCOL], [WS_SUBPROTOCOL, `bearer.${token}`, `bearer.${wrong}`]]) {
        const answer = await upgrade(protocols);
        expect(answer.status, protocols.join(", ")).to.equal(401);
        expect(JSON.parse(answer.body).error.code, protocols.join(", ")).to.equal("UNAUTHORIZED");
        expect(answer.headers["www-authenticate"]).to.match(/^Bearer /);
        expect(answer.headers["sec-websocket-protocol"]).to.equal(undefined);
        expect(JSON.stringify(answer.headers) + answer.body).not.to.include(token.slice(0, 40));
      }
    });

    it("still takes the Authorization header, with or without subprotocols", async () => {
      expect((await upgrade([], { authorization: `Bearer ${token}` })).status).to.equal(101);
      const both = await upgrade([WS_SUBPROTOCOL], { authorization: `Bearer ${token}` });
      expect(both.status).to.equal(101);
      expect(both.protocol).to.equal(WS_SUBPROTOCOL);
    });
  });

  describe("settings", () => {
    it("without WEB_CLIENT_DIR, / answers the relay's JSON 404 as before", async () => {
      const relay = await startRelayProcess({
        rpcUrl: stack.rpcUrl,
        contractAddress: stack.contract,
        deployBlock: 0,
        relayerKey: `0x${"11".repeat(32)}`,
        dataDir: path.join(stack.build.outDir, "..", "relay-without-web"),
        env: { WEB_CLIENT_DIR: "", LOG_LEVEL: "warn" },
      });
      try {
        for (const pathname of ["/", "/index.html", "/client-config.json"]) {
          const answer = await relay.request("GET", pathname);
          expect(answer.status, pathname).to.equal(404);
          expect(answer.body.error.code).to.equal("NOT_FOUND");
          expect(answer.headers["content-security-policy"]).to.equal(undefined);
        }
      } finally {
        await relay.stop();
      }
    });

    it("a WEB_CLIENT_DIR without a built client, or a bad WEB_CONNECT_SRC, stops the relay with one line naming it", async () => {
      const base = {
        rpcUrl: stack.rpcUrl,
        contractAddress: stack.contract,
        deployBlock: 0,
        relayerKey: `0x${"11".repeat(32)}`,
        dataDir: path.join(stack.build.outDir, "..", "relay-bad-settings"),
        port: await freePort(),
      };
      for (const [env, expected] of [
        [{ WEB_CLIENT_DIR: path.join(stack.build.outDir, "missing") }, /relay: .*invalid setting WEB_CLIENT_DIR: cannot read the web client's folder/],
        [{ WEB_CLIENT_DIR: stack.build.outDir, WEB_CONNECT_SRC: "https: 'unsafe-inline'" }, /relay: invalid setting WEB_CONNECT_SRC: "'unsafe-inline'" is not a CSP source/],
      ] as const) {
        const child = spawnRelay([], relayEnv({ ...base, env: { ...env, LOG_LEVEL: "warn", INSECURE_HTTP: "1" } }));
        let stderr = "";
        child.stderr!.on("data", (chunk) => (stderr += chunk));
        const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
        expect(code, stderr).to.equal(1);
        expect(stderr).to.match(expected);
      }
    });
  });
});
