/**
 * The web client and the `chat` CLI on one relay and chain, as people mix them: a browser user and a CLI
 * user talk both ways in a one-to-one chat (live in the browser, by `chat inbox` on the command line); a
 * browser creates a group with a CLI user and another browser user, adds and removes members through the
 * member list; the CLI user links a browser as a second device, approved with `chat device approve`, which
 * then reads and writes the user's conversations. The one-to-one test also takes the README's screenshots.
 */
import { expect } from "chai";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Page } from "playwright-core";
import { runChat, type ChatResult } from "../helpers/chat-process";
import { expectNoProblems } from "./browser";
import { STEP_MS, openApp, openConversation, registerInBrowser, sendText, startChat, waitForMessaging, waitForText, type BrowserUser } from "./app";
import { startWebStack, type WebStack } from "./stack";

/** Test-only fast key derivation for the CLI: the subject here is the interplay, not the KDF. */
const CLIENT_ENV = { CHAT_INSECURE_FAST_KDF: "1" };
/** The README's screenshots are rewritten only when asked (UPDATE_SCREENSHOTS=1); otherwise taken into a temporary folder. */
const DOCS = process.env.UPDATE_SCREENSHOTS === "1" ? path.resolve(__dirname, "../../docs") : path.join(os.tmpdir(), `eth-chat-screenshots-${process.pid}`);

const cliPassword = (who: string) => `${who}-Secret-pw-1`;

/** A PNG's width and height, from its IHDR chunk. */
function pngSize(file: string): { width: number; height: number } {
  const bytes = readFileSync(file);
  expect(bytes.subarray(1, 4).toString("latin1"), `${file} is a PNG`).to.equal("PNG");
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

/**
 * Forgets the failed loads of a fresh profile's first moments, when the page tried the default chain RPC
 * (http://127.0.0.1:8545, where nothing runs here) before the test saved the stack's settings.
 */
function forgetDefaultRpcAttempts(watched: BrowserUser["watched"]): void {
  const errors = watched.problems.consoleErrors;
  const kept = errors.filter((e) => !e.includes("net::ERR_CONNECTION_REFUSED"));
  errors.splice(0, errors.length, ...kept);
}

/** The message item of the open conversation `title` that contains `body`. */
function messageItem(page: Page, title: string, body: string) {
  return page.getByRole("list", { name: `Messages with ${title}` }).locator("li", { hasText: body }).first();
}

async function createGroupInBrowser(page: Page, name: string, members: string[]): Promise<void> {
  await page.getByRole("button", { name: "New group" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Group name").fill(name);
  await dialog.getByLabel("Members").fill(members.join(", "));
  await dialog.getByRole("button", { name: "Create group" }).click();
  await dialog.waitFor({ state: "detached" });
  await page.getByRole("textbox", { name: `Message to #${name}` }).waitFor();
}

/** The open group's member list (its <details> opened), as the names shown. */
async function openMemberList(page: Page) {
  const details = page.locator(".conversation-header details");
  if ((await details.getAttribute("open")) === null) await details.locator("summary").click();
  return details;
}

describe("web client and chat CLI together", function () {
  this.timeout(600_000);
  let stack: WebStack;
  let tmp: string;
  const users: BrowserUser[] = [];
  const pages: { page: Page; watched: BrowserUser["watched"]; session: BrowserUser["session"] }[] = [];
  let ann: BrowserUser;

  const chat = (who: string, args: string[], input?: string) =>
    runChat({ home: path.join(tmp, who), relay: stack.relayProcess.url, rpc: stack.rpcUrl, args, input, env: CLIENT_ENV, timeoutMs: 240_000 });
  const ok = (result: ChatResult, what: string) => {
    expect(result.code, `${what} failed:\n${result.stdout}\n${result.stderr}`).to.equal(0);
    return result;
  };
  /** Runs `chat inbox` until its output includes every string of `wanted` (a message may still be on its way). */
  async function inboxUntil(who: string, wanted: string[]): Promise<string> {
    let seen = "";
    const deadline = Date.now() + STEP_MS * 2;
    for (;;) {
      seen += ok(await chat(who, ["inbox"]), `${who} inbox`).stdout;
      if (wanted.every((w) => seen.includes(w))) return seen;
      if (Date.now() > deadline) expect.fail(`${who}'s inbox never showed ${JSON.stringify(wanted)}:\n${seen}`);
    }
  }

  before(async () => {
    stack = await startWebStack();
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-web-cli-"));
    for (const who of ["carl", "dora"]) ok(await chat(who, ["--password-stdin", "register", who], `${cliPassword(who)}\n`), `register ${who}`);
  });
  after(async () => {
    for (const u of [...users, ...pages]) await u.session.close().catch(() => undefined);
    await stack?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("1:1 between a browser and the CLI: live in the browser, by inbox on the CLI; screenshots", async () => {
    ann = await registerInBrowser(stack, "ann");
    users.push(ann);
    forgetDefaultRpcAttempts(ann.watched);

    // carl starts the chat from the command line, with ann's key packages; ann's page shows it live.
    ok(await chat("carl", ["send", "ann", "hi ann, carl here on the command line"]), "carl sends");
    await openConversation(ann.page, "carl");
    await waitForText(ann.page, "carl", "hi ann, carl here on the command line");
    expect(await messageItem(ann.page, "carl", "carl here").locator(".from").innerText()).to.equal("carl");

    await sendText(ann.page, "carl", "hello carl, from ann's browser");
    await messageItem(ann.page, "carl", "hello carl, from ann's browser").getByText("stored").waitFor();
    const inbox = await inboxUntil("carl", ["ann: hello carl, from ann's browser"]);
    expect(inbox).to.not.include("hi ann, carl here"); // his own text is not shown back to him as received
    // carl's device has read past it: the browser turns it to delivered (from the relay's cursors).
    await messageItem(ann.page, "carl", "hello carl, from ann's browser").getByText("delivered").waitFor();

    ok(await chat("carl", ["send", "ann", "got it. Lunch at noon?"]), "carl answers");
    await waitForText(ann.page, "carl", "got it. Lunch at noon?");
    const json = ok(await chat("carl", ["--json", "inbox"]), "carl inbox --json");
    expect(json.json.filter((o) => o.type === "message")).to.deep.equal([]);
    await sendText(ann.page, "carl", "Noon works, see you there");
    await messageItem(ann.page, "carl", "Noon works").getByText("stored").waitFor();
    const read = ok(await chat("carl", ["--json", "inbox"]), "carl reads").json.filter((o) => o.type === "message");
    expect(read.map((o) => [o.from, o.body])).to.deep.equal([["ann", "Noon works, see you there"]]);
    await messageItem(ann.page, "carl", "Noon works").getByText("delivered").waitFor();
    // One more that carl has not read: it stays "stored", so the screenshot shows both states.
    await sendText(ann.page, "carl", "I'll bring the plans");
    await messageItem(ann.page, "carl", "bring the plans").getByText("stored").waitFor();

    mkdirSync(DOCS, { recursive: true });
    await ann.page.setViewportSize({ width: 1280, height: 800 });
    await ann.page.getByRole("textbox", { name: "Message to carl" }).fill("");
    await ann.page.screenshot({ path: path.join(DOCS, "web-client.png") });
    expect(pngSize(path.join(DOCS, "web-client.png"))).to.deep.equal({ width: 1280, height: 800 });
    await ann.page.setViewportSize({ width: 390, height: 844 });
    // On a phone the open conversation takes the whole screen, with a way back to the list.
    await ann.page.getByRole("button", { name: "← Back" }).waitFor();
    await ann.page.screenshot({ path: path.join(DOCS, "web-client-phone.png") });
    expect(pngSize(path.join(DOCS, "web-client-phone.png"))).to.deep.equal({ width: 390, height: 844 });
    await ann.page.setViewportSize({ width: 1280, height: 800 });
    expectNoProblems(ann.watched, "ann's page");
  });

  it("a group of two browsers and the CLI: everyone reads everyone; add and remove through the member list", async () => {
    const bea = await registerInBrowser(stack, "bea");
    users.push(bea);
    forgetDefaultRpcAttempts(bea.watched);

    await createGroupInBrowser(ann.page, "team", ["carl", "bea"]);
    await sendText(ann.page, "#team", "welcome to the team");
    await openConversation(bea.page, "#team");
    await waitForText(bea.page, "#team", "welcome to the team");
    const joined = await inboxUntil("carl", ["-- you joined #team", "#team ann: welcome to the team"]);
    expect(joined).to.not.include("bea:");

    ok(await chat("carl", ["send", "--group", "team", "carl in the team, from the CLI"]), "carl sends to #team");
    await waitForText(ann.page, "#team", "carl in the team, from the CLI");
    await waitForText(bea.page, "#team", "carl in the team, from the CLI");
    await sendText(bea.page, "#team", "bea in the team, from her browser");
    await waitForText(ann.page, "#team", "bea in the team, from her browser");
    await inboxUntil("carl", ["#team bea: bea in the team, from her browser"]);

    // ann adds dora (a CLI user) through the member list.
    const members = await openMemberList(ann.page);
    await expect(members.locator("summary").innerText()).to.eventually.equal("3 members");
    await members.getByRole("button", { name: "Add member" }).click();
    const addDialog = ann.page.getByRole("dialog");
    await addDialog.getByLabel("Usernames").fill("dora");
    await addDialog.getByRole("button", { name: "Add" }).click();
    await addDialog.waitFor({ state: "detached" });
    await ann.page.locator(".conversation-header details summary", { hasText: "4 members" }).waitFor();
    await waitForText(bea.page, "#team", "ann added dora to #team");
    await inboxUntil("dora", ["-- you joined #team"]);
    await inboxUntil("carl", ["-- ann added dora to #team"]);

    // ann removes bea: bea's page says so, and what follows reaches everyone but her.
    await (await openMemberList(ann.page)).getByRole("button", { name: "Remove bea" }).click();
    const confirm = ann.page.getByRole("dialog");
    await confirm.getByRole("button", { name: "Remove", exact: true }).click();
    await confirm.waitFor({ state: "detached" });
    await ann.page.locator(".conversation-header details summary", { hasText: "3 members" }).waitFor();
    expect(await (await openMemberList(ann.page)).getByRole("list", { name: "Members" }).locator("li").allInnerTexts()).to.satisfy((names: string[]) =>
      names.every((n) => !n.startsWith("bea")),
    );
    // by the commit, or by the relay's refusal when it dropped her before she read it
    await bea.page.getByRole("list", { name: "Messages with #team" }).locator("li", { hasText: /ann removed you from #team|you are no longer in #team/ }).waitFor();
    await sendText(ann.page, "#team", "after bea: not for her");
    await inboxUntil("carl", ["-- ann removed bea from #team", "#team ann: after bea: not for her"]);
    await inboxUntil("dora", ["#team ann: after bea: not for her"]);
    // bea has caught up past it once a later text of ann's, in another conversation, reaches her page.
    await startChat(ann.page, "bea");
    await sendText(ann.page, "bea", "sent after the team text");
    await openConversation(bea.page, "ann");
    await waitForText(bea.page, "ann", "sent after the team text");
    await openConversation(bea.page, "#team");
    const beaTeam = await bea.page.getByRole("list", { name: "Messages with #team" }).locator("li").allInnerTexts();
    expect(beaTeam.some((t) => t.includes("not for her")), JSON.stringify(beaTeam)).to.equal(false);
    expectNoProblems(ann.watched, "ann's page");
    // The relay may refuse the removed device's reads of the group (403 NOT_GROUP_MEMBER): that is how it learns.
    const refusals = bea.watched.problems.consoleErrors.filter((e) => e.includes("status of 403"));
    expectNoProblems({ ...bea.watched.problems, consoleErrors: bea.watched.problems.consoleErrors.filter((e) => !refusals.includes(e)) }, "bea's page");
  });

  it("a browser linked to carl's account: approved by chat device approve, reads and writes his conversations", async () => {
    const { session, watched, page } = await openApp(stack);
    pages.push({ session, watched, page });
    forgetDefaultRpcAttempts(watched);
    await page.getByRole("navigation", { name: "Account" }).getByRole("button", { name: "Link this browser" }).click();
    const form = page.getByRole("form", { name: "Link this browser" });
    await form.getByLabel("Username").fill("carl");
    await form.getByLabel("Password", { exact: true }).fill(cliPassword("carl"));
    await form.getByLabel("Device name (optional)").fill("carl's browser");
    await form.getByRole("button", { name: "Request link" }).click();
    const command = await form.locator(".code", { hasText: "chat device approve" }).innerText();
    const code = /^chat device approve ([0-9A-Z]{8})$/.exec(command.trim())?.[1];
    if (!code) expect.fail(`no link code on the page: ${command}`);
    const fingerprint = (await form.locator(".code").nth(1).innerText()).trim();

    const approved = ok(await chat("carl", ["--json", "--password-stdin", "--yes", "device", "approve", code], `${cliPassword("carl")}\n`), "approve");
    const view = approved.json.find((o) => o.type === "device-approved");
    expect(view.fingerprint).to.equal(fingerprint);
    expect(view.name).to.equal("carl's browser");
    await waitForMessaging(page);

    // The device joined carl's conversations from now on: both show, and new texts reach it live.
    const list = page.getByRole("navigation", { name: "Conversations" });
    await list.getByText("ann", { exact: true }).waitFor();
    await list.getByText("#team").waitFor();
    await openConversation(page, "ann");
    await openConversation(ann.page, "carl");
    await sendText(ann.page, "carl", "for both of carl's devices");
    await waitForText(page, "ann", "for both of carl's devices");
    // What was sent before the link stays on the devices that were there.
    expect(await page.getByRole("list", { name: "Messages with ann" }).locator("li", { hasText: "Lunch at noon" }).count()).to.equal(0);

    await sendText(page, "ann", "from carl's linked browser");
    await waitForText(ann.page, "carl", "from carl's linked browser");
    expect(await messageItem(ann.page, "carl", "from carl's linked browser").locator(".from").innerText()).to.equal("carl");
    await openConversation(page, "#team");
    await sendText(page, "#team", "carl's browser in the team");
    await openConversation(ann.page, "#team");
    await waitForText(ann.page, "#team", "carl's browser in the team");

    // carl's CLI shows them as his own, sent from another device; and reads ann's text too.
    let seen: any[] = [];
    const deadline = Date.now() + STEP_MS * 2;
    while (!["from carl's linked browser", "carl's browser in the team"].every((b) => seen.some((o) => o.type === "sent" && o.body === b))) {
      if (Date.now() > deadline) expect.fail(`carl's inbox never showed the browser's texts: ${JSON.stringify(seen)}`);
      seen = seen.concat(ok(await chat("carl", ["--json", "inbox"]), "carl inbox").json);
    }
    const own = seen.filter((o) => o.type === "sent");
    expect(own.every((o) => o.fromOtherDevice === true), JSON.stringify(own)).to.equal(true);
    expect(seen.some((o) => o.type === "message" && o.from === "ann" && o.body === "for both of carl's devices")).to.equal(true);
    const text = ok(await chat("carl", ["send", "ann", "and one from the CLI again"]), "carl sends").stdout;
    expect(text).to.include("Sent to ann");
    await openConversation(page, "ann");
    await waitForText(page, "ann", "and one from the CLI again");
    expectNoProblems(watched, "the linked page");
    expectNoProblems(ann.watched, "ann's page");
  });
});
