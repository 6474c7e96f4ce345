/**
 * Key changes as a browser user sees them, in the real Chromium against a real relay, anvil and MariaDB:
 * a peer's rotation is a warning and messages still flow; a peer's reset (requested by the `chat` CLI from
 * another home, completed after the chain's clock passes the contract's delay) is an alarm while pending and
 * once done, with the safety number of both keys and a Verify button whose mark survives a reload; a reset
 * of the user's own account shows the banner while the page is open, and its "Cancel reset" cancels it on chain.
 */
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { JsonRpcProvider, ZeroAddress } from "ethers";
import type { Page } from "playwright-core";
import { connectRegistry, type RegistryContract } from "../../chain/registry";
import { publicKeyToAddress } from "../../protocol/keys";
import { formatSafetyNumber, safetyNumber } from "../../protocol/safety-number";
import { runChat, type ChatResult } from "../helpers/chat-process";
import { loginInBrowser, openConversation, registerInBrowser, sendText, startChat, STEP_MS, waitForText, type BrowserUser } from "./app";
import { startWebStack, type WebStack } from "./stack";

/** test/helpers/registry.ts deploys ChatRegistry with this reset delay (seconds). */
const RESET_DELAY_S = 60;
/** The browser's owner check runs this often in this test (the app's localStorage setting for tests). */
const OWN_CHECK_MS = 2_000;

describe("web client: key changes of peers and of the user's own account", function () {
  this.timeout(600_000);
  let stack: WebStack;
  let provider: JsonRpcProvider;
  let registry: RegistryContract;
  let tmp: string;
  let ann: BrowserUser;
  let bob: BrowserUser;
  const users: BrowserUser[] = [];

  /** The CLI in a home of its own; argon2id at the real parameters, as the browser derives the same credential. */
  const chat = (home: string, args: string[], input?: string) =>
    runChat({ home: path.join(tmp, home), relay: stack.relayProcess.url, rpc: stack.rpcUrl, args, input, timeoutMs: 180_000 });
  const ok = (result: ChatResult, what: string) => {
    expect(result.code, `${what} failed:\n${result.stderr}`).to.equal(0);
    return result;
  };
  const timeline = (page: Page, title: string) => page.getByRole("list", { name: `Messages with ${title}` });

  /** The public key of `username`'s key `index`, from the relay, checked against the chain's address. */
  const publicKey = async (username: string, index: number): Promise<string> => {
    const answer = await stack.relayProcess.request("GET", `/v1/users/${username}/keys`);
    const key = (answer.body.keys as { index: number; publicKey: string }[]).find((k) => k.index === index);
    expect(key, `${username}'s key ${index} from the relay`).to.exist;
    const record = await registry.keyRecord(username, index);
    expect(publicKeyToAddress(key!.publicKey).toLowerCase()).to.equal(record.key.toLowerCase());
    return key!.publicKey;
  };

  before(async () => {
    stack = await startWebStack();
    provider = new JsonRpcProvider(stack.rpcUrl, undefined, { staticNetwork: true, cacheTimeout: -1 });
    registry = connectRegistry(stack.contract, provider);
    tmp = mkdtempSync(path.join(os.tmpdir(), "web-key-changes-"));
  });
  afterEach(async function () {
    if (this.currentTest?.state !== "failed") return;
    for (const u of users) console.log(`${u.username}'s screen at the failure:\n` + (await u.page.locator("main").innerText().catch((e: unknown) => String(e))));
  });
  after(async () => {
    for (const u of users) await u.session.close().catch(() => undefined);
    provider?.destroy();
    await stack?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("a peer's rotation shows as a warning naming the peer and key, and messages still flow both ways", async () => {
    ann = await registerInBrowser(stack, "ann");
    bob = await registerInBrowser(stack, "bob");
    users.push(ann, bob);
    await startChat(ann.page, "bob");
    await sendText(ann.page, "bob", "hello bob, before your rotation");
    // the welcome may take a while on a busy machine
    await bob.page.getByRole("navigation", { name: "Conversations" }).getByText("ann").first().waitFor({ timeout: 3 * STEP_MS });
    await openConversation(bob.page, "ann");
    await waitForText(bob.page, "ann", "hello bob, before your rotation");

    // bob rotates in his browser, through the account menu
    await bob.page.getByRole("button", { name: "bob ▾" }).click();
    await bob.page.getByRole("menuitem", { name: "Rotate key" }).click();
    const dialog = bob.page.getByRole("dialog");
    await dialog.getByLabel("Password").fill(bob.password);
    await dialog.getByRole("button", { name: "Rotate key" }).click();
    await dialog.waitFor({ state: "detached" });
    await bob.page.getByText(/Rotated to key 1 in block \d+/).waitFor();
    expect((await registry.currentKey("bob"))[1]).to.equal(1n);

    // ann's open conversation warns (within the engine's key re-check), names bob and the key index, and is no alarm
    const warning = timeline(ann.page, "bob").locator("li.event.level-warning", { hasText: "bob rotated to a new key (key 1)" });
    await warning.waitFor({ timeout: 2 * STEP_MS });
    await warning.getByRole("button", { name: "Verify bob" }).waitFor();
    const rotated = formatSafetyNumber(safetyNumber({ a: { username: "ann", publicKey: await publicKey("ann", 0) }, b: { username: "bob", publicKey: await publicKey("bob", 1) } }));
    expect(((await warning.locator("pre.safety-number").textContent()) ?? "").replace(/\s+/g, " ")).to.equal(rotated);
    expect(await timeline(ann.page, "bob").locator("li.level-alarm").count()).to.equal(0);

    await sendText(bob.page, "ann", "bob here, on my new key");
    await waitForText(ann.page, "bob", "bob here, on my new key");
    await sendText(ann.page, "bob", "ann to bob after the rotation");
    await waitForText(bob.page, "ann", "ann to bob after the rotation");
    expect(ann.watched.problems.pageErrors).to.deep.equal([]);
  });

  it("a peer's reset: an alarm while pending, then RESET with the safety number and a Verify that survives a reload", async () => {
    // bob's account is reset from another CLI home with his password
    const request = ok(await chat("bob_new", ["--password-stdin", "--json", "reset", "bob"], `${bob.password}\n`), "reset bob from the CLI");
    expect(request.json.find((o) => o.type === "reset")).to.include({ status: "requested", username: "bob" });
    expect(request.stdout + request.stderr).to.not.include(bob.password);
    const [pendingKey] = await registry.pendingReset("bob");
    const resetIndex = (await registry.currentKey("bob"))[1] + 1n;
    expect(pendingKey).to.not.equal(ZeroAddress);

    // while pending, ann's conversation shows an alarm (within the engine's key re-check)
    const pendingAlarm = timeline(ann.page, "bob").locator("li.event.level-alarm", { hasText: "a RESET of bob's account is pending on chain" });
    await pendingAlarm.waitFor({ timeout: 2 * STEP_MS });

    // the chain's clock passes the delay; the relay completes the due reset; the CLI home logs in with the new key
    await provider.send("evm_increaseTime", [RESET_DELAY_S + 5]);
    await provider.send("evm_mine", []);
    const deadline = Date.now() + STEP_MS;
    while ((await registry.currentKey("bob"))[1] !== resetIndex) {
      if (Date.now() > deadline) throw new Error("the relay did not complete bob's due reset");
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const [current] = await registry.currentKey("bob");
    expect(current).to.equal(pendingKey);
    expect(Number((await registry.keyRecord("bob", resetIndex)).kind)).to.equal(3); // KeyKind.Reset
    const finish = ok(await chat("bob_new", ["--password-stdin", "--json", "reset", "bob"], `${bob.password}\n`), "bob's new home finishes the reset");
    expect(finish.json.find((o) => o.type === "reset")).to.include({ status: "completed", keyIndex: Number(resetIndex) });

    // ann sees the loud warning with the safety number of her key and bob's new one
    const alarm = timeline(ann.page, "bob").locator("li.event.level-alarm", { hasText: "bob's account was RESET" });
    await alarm.waitFor({ timeout: 2 * STEP_MS });
    expect(await alarm.innerText()).to.include("RESET");
    const expected = formatSafetyNumber(safetyNumber({ a: { username: "ann", publicKey: await publicKey("ann", 0) }, b: { username: "bob", publicKey: await publicKey("bob", Number(resetIndex)) } }));
    const shown = (await alarm.locator("pre.safety-number").textContent()) ?? "";
    expect(shown.split("\n"), "3 lines of 4 groups").to.have.length(3);
    expect(shown.replace(/\s+/g, " ").trim()).to.match(/^(\d{5} ){11}\d{5}$/);
    expect(shown.replace(/\s+/g, " ").trim()).to.equal(expected);

    // Verify: confirmed in the dialog, the button goes and a line says so
    await alarm.getByRole("button", { name: "Verify bob" }).click();
    const confirm = ann.page.getByRole("dialog");
    expect((await confirm.locator("pre.safety-number").textContent())?.replace(/\s+/g, " ").trim()).to.equal(expected);
    await confirm.getByRole("button", { name: "It matches: verify" }).click();
    await confirm.waitFor({ state: "detached" });
    await timeline(ann.page, "bob").locator("li", { hasText: `you marked bob's key ${resetIndex} as verified` }).waitFor();
    await alarm.getByText("Verified").waitFor();
    expect(await timeline(ann.page, "bob").getByRole("button", { name: "Verify bob" }).count()).to.equal(0);

    // after a reload and a login, still verified
    await ann.page.reload();
    await loginInBrowser(ann);
    await openConversation(ann.page, "bob");
    const again = timeline(ann.page, "bob").locator("li.event.level-alarm", { hasText: "bob's account was RESET" });
    await again.getByText("Verified").waitFor();
    expect(await timeline(ann.page, "bob").getByRole("button", { name: "Verify bob" }).count()).to.equal(0);
    expect(await timeline(ann.page, "bob").locator("li", { hasText: `you marked bob's key ${resetIndex} as verified` }).count()).to.equal(1);
    expect(ann.watched.problems.pageErrors).to.deep.equal([]);
  });

  it("a reset of the user's own account: the banner shows while the page is open, and Cancel reset cancels it on chain", async () => {
    const carol = await registerInBrowser(stack, "carol");
    users.push(carol);
    // the owner check runs every OWN_CHECK_MS from the next login on
    await ann.page.evaluate((ms) => localStorage.setItem("eth-chat:own-account-check-ms", String(ms)), OWN_CHECK_MS);
    await ann.page.reload();
    await loginInBrowser(ann);
    const banner = ann.page.locator(".banner.alarm");
    expect(await banner.isHidden()).to.equal(true);
    const annKeyBefore = [...(await registry.currentKey("ann"))];

    const request = ok(await chat("ann_thief", ["--password-stdin", "--json", "reset", "ann"], `${ann.password}\n`), "reset ann from the CLI");
    expect(request.json.find((o) => o.type === "reset")).to.include({ status: "requested", username: "ann" });
    const [, effectiveAt] = await registry.pendingReset("ann");
    expect(effectiveAt).to.not.equal(0n);

    // the page shows the banner without a reload, with the effective time and the cancel button
    await banner.getByRole("heading", { name: /A RESET of your account is pending/i }).waitFor({ timeout: STEP_MS });
    const when = await ann.page.evaluate((ms) => new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }), Number(effectiveAt) * 1000);
    expect(await banner.textContent()).to.include(`It takes effect at ${when}`);
    await banner.getByRole("button", { name: "Cancel reset" }).click();
    await banner.waitFor({ state: "hidden" });
    await ann.page.getByText(/Cancelled the reset .* confirmed on chain in block \d+/).waitFor();
    const [afterKey, afterEffective] = await registry.pendingReset("ann");
    expect(afterKey).to.equal(ZeroAddress);
    expect(afterEffective).to.equal(0n);
    expect([...(await registry.currentKey("ann"))]).to.deep.equal(annKeyBefore);

    // past the delay nothing completes, and ann keeps chatting with her key
    await provider.send("evm_increaseTime", [RESET_DELAY_S + 5]);
    await provider.send("evm_mine", []);
    await startChat(ann.page, "carol");
    await sendText(ann.page, "carol", "still ann, after cancelling the reset");
    await carol.page.getByRole("navigation", { name: "Conversations" }).getByText("ann").first().waitFor({ timeout: 3 * STEP_MS });
    await openConversation(carol.page, "ann");
    await waitForText(carol.page, "ann", "still ann, after cancelling the reset");
    await sendText(carol.page, "ann", "carol answers ann");
    await waitForText(ann.page, "carol", "carol answers ann");
    expect([...(await registry.currentKey("ann"))]).to.deep.equal(annKeyBefore);
    expect(await banner.isHidden()).to.equal(true);
    expect(ann.watched.problems.pageErrors).to.deep.equal([]);
  });
});
