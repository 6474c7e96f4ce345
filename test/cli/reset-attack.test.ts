/**
 * The time-locked reset against real processes (chat CLI, relay, anvil, MariaDB): a thief who knows a
 * password requests a reset through the relay; the owner's next relay command (inbox, send, status) warns
 * loudly with the command that cancels it; `chat cancel-reset` cancels it on chain; with the chain's clock moved past the delay the
 * thief's key never becomes current. Without a cancel the reset completes after the delay (the relay
 * completes it), the new device logs in, and a peer is warned.
 * Fast KDF parameters (CHAT_INSECURE_FAST_KDF): the attack is about the chain and the relay, not argon2.
 */
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { JsonRpcProvider, Wallet } from "ethers";
import { decodeRegistryRevert } from "../../chain/errors";
import { connectRegistry, type RegistryContract } from "../../chain/registry";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { deployRegistry } from "../helpers/registry";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { runChat, type ChatResult } from "../helpers/chat-process";
import { sleep, waitFor } from "../helpers/wait";

const PASSWORDS = { alice: "alice-Secret-pw-1", bob: "bob-Secret-pw-2", carol: "carol-Secret-pw-3" };
const RESET_DELAY_S = 60; // test/helpers/registry.ts deploys with this delay

describe("time-locked reset: the stolen-password attack (real processes)", function () {
  this.timeout(120_000);
  let anvil: AnvilNode;
  let db: TestDatabase;
  let relay: RelayProcess;
  let provider: JsonRpcProvider;
  let registry: RegistryContract;
  let tmp: string;

  const home = (who: string) => path.join(tmp, who);
  const chat = (who: string, args: string[], input?: string) =>
    runChat({ home: home(who), relay: relay.url, rpc: anvil.url, args, input, env: { CHAT_INSECURE_FAST_KDF: "1" } });
  const ok = (result: ChatResult, what: string) => {
    expect(result.code, `${what} failed:\n${result.stderr}`).to.equal(0);
    return result;
  };
  const warnings = (result: ChatResult, code: string) => result.json.filter((o) => o.type === "warning" && o.code === code);

  /** Moves anvil's clock past the reset delay and mines a block carrying that time. */
  const passTheDelay = async () => {
    await provider.send("evm_increaseTime", [RESET_DELAY_S + 5]);
    await provider.send("evm_mine", []);
  };

  before(async () => {
    anvil = await startAnvil();
    const deployed = await deployRegistry({ rpcUrl: anvil.url });
    db = await createTestDatabase("chat_reset_attack");
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-reset-attack-"));
    relay = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: deployed.address,
      deployBlock: deployed.deployBlock,
      relayerKey: deployed.relayerKey,
      mysqlUrl: db.url,
      dataDir: path.join(tmp, "relay"),
    });
    provider = new JsonRpcProvider(anvil.url, undefined, { staticNetwork: true, cacheTimeout: -1 });
    registry = connectRegistry(deployed.address, provider);
    for (const who of ["alice", "bob", "carol"] as const) {
      ok(await chat(who, ["--password-stdin", "register", who], `${PASSWORDS[who]}\n`), `register ${who}`);
    }
    ok(await chat("alice", ["whois", "bob"]), "alice pins bob's key");
    ok(await chat("alice", ["whois", "carol"]), "alice pins carol's key");
  });

  after(async () => {
    provider?.destroy();
    await relay?.stop();
    await anvil?.stop();
    await db?.drop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("a thief's reset is shown to the owner at once, cancelled by the owner's key, and never becomes current", async () => {
    const [bobKeyBefore] = await registry.currentKey("bob");

    const request = ok(await chat("thief", ["--password-stdin", "--json", "reset", "bob"], `${PASSWORDS.bob}\n`), "thief requests a reset");
    const requested = request.json.find((o) => o.type === "reset");
    expect(requested).to.include({ status: "requested", username: "bob" });
    const [pendingKey, effectiveAt] = await registry.pendingReset("bob");
    expect(effectiveAt).to.equal(BigInt(requested.effectiveAt));
    expect(request.stdout + request.stderr).to.not.include(PASSWORDS.bob);

    // The relay shows the pending reset with the keys, and the thief's key is not current yet.
    const keys = await relay.request("GET", "/v1/users/bob/keys");
    expect(keys.body.pendingReset).to.include({ address: pendingKey, effectiveAt: Number(effectiveAt) });
    expect((await registry.currentKey("bob"))[0]).to.equal(bobKeyBefore);

    // The owner's next relay command warns loudly, naming the command that cancels it.
    const inbox = ok(await chat("bob", ["--json", "inbox"]), "bob's inbox");
    const [own] = warnings(inbox, "OWN_RESET_PENDING");
    expect(own, inbox.stderr).to.exist;
    expect(own.message).to.include("chat cancel-reset");
    expect(inbox.stderr).to.match(/^!!! WARNING: A RESET of your account bob/m);

    // So do send and status; status also lists what bob sent that alice has not received yet.
    const send = ok(await chat("bob", ["--json", "send", "alice", "still me?"]), "bob writes to alice");
    expect(warnings(send, "OWN_RESET_PENDING"), send.stderr).to.have.length(1);
    const sentId = send.json.find((o) => o.type === "sent").id;
    const status = ok(await chat("bob", ["--json", "status"]), "bob's status");
    expect(warnings(status, "OWN_RESET_PENDING"), status.stderr).to.have.length(1);
    const record = status.json.find((o) => o.type === "status");
    expect(record.waitingCheck).to.equal("ok");
    const waiting = record.waiting.find((m: { id: string }) => m.id === sentId);
    expect(waiting, JSON.stringify(record.waiting)).to.include({ to: "alice", state: "pending" });
    expect(waiting.description).to.include(`is on the relay, not yet on alice's device`);
    const people = ok(await chat("bob", ["status"]), "bob's status for people");
    expect(people.stdout).to.match(/undelivered: 1 message\(s\) accepted by the relay, not yet delivered:\n {2}your message to alice of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \("still me\?"\) is on the relay, not yet on alice's device/);

    // A peer looking bob up is warned as loudly.
    const whois = ok(await chat("alice", ["--json", "whois", "bob"]), "alice looks bob up");
    expect(warnings(whois, "KEY_RESET_PENDING")).to.have.length(1);

    // The owner cancels with the key on the device; the chain confirms.
    const cancel = ok(await chat("bob", ["--json", "cancel-reset"]), "bob cancels");
    expect(cancel.json.find((o) => o.type === "reset-cancelled")).to.include({ username: "bob", cancelledKey: pendingKey });
    const [afterCancel] = await registry.pendingReset("bob");
    expect(afterCancel).to.equal("0x0000000000000000000000000000000000000000");

    // Past the delay, nothing can complete it: the thief's key never becomes current.
    await passTheDelay();
    await sleep(1500); // several relay sync polls
    const [bobKeyAfter, index] = await registry.currentKey("bob");
    expect(bobKeyAfter).to.equal(bobKeyBefore);
    expect(index).to.equal(0n);
    expect(await registry.keyCount("bob")).to.equal(1n);
    const stranger = new Wallet("0x" + "77".repeat(32), provider);
    const completion = await registry
      .connect(stranger)
      .completeReset.staticCall("bob", "0x" + "11".repeat(64))
      .then(() => null, (error: unknown) => decodeRegistryRevert(error));
    expect(completion?.name).to.equal("ChatRegistryNoPendingReset");
    expect((await relay.request("GET", "/v1/users/bob/keys")).body.pendingReset).to.equal(null);

    // The owner's device is quiet again.
    const quiet = ok(await chat("bob", ["--json", "inbox"]), "bob's inbox after the cancel");
    expect(warnings(quiet, "OWN_RESET_PENDING")).to.have.length(0);
  });

  it("without a cancel the reset completes after the delay; the new device logs in and a peer is warned", async () => {
    const request = ok(await chat("carol_new", ["--password-stdin", "--json", "reset", "carol"], `${PASSWORDS.carol}\n`), "carol requests a reset");
    expect(request.json.find((o) => o.type === "reset")).to.include({ status: "requested" });

    // Before the delay: still pending, the new device cannot finish yet.
    const early = ok(await chat("carol_new", ["--password-stdin", "--json", "reset", "carol"], `${PASSWORDS.carol}\n`), "too early");
    expect(early.json.find((o) => o.type === "reset")).to.include({ status: "pending" });
    expect((await registry.currentKey("carol"))[1]).to.equal(0n);

    await passTheDelay();
    // The relay completes the due reset itself.
    await waitFor("the relay to complete carol's reset", async () => (await registry.currentKey("carol"))[1] === 1n, 20_000, 200);
    expect(Number((await registry.keyRecord("carol", 1)).kind)).to.equal(3); // KeyKind.Reset
    const [none] = await registry.pendingReset("carol");
    expect(none).to.equal("0x0000000000000000000000000000000000000000");

    const finish = ok(await chat("carol_new", ["--password-stdin", "--json", "reset", "carol"], `${PASSWORDS.carol}\n`), "carol finishes");
    expect(finish.json.find((o) => o.type === "reset")).to.include({ status: "completed", keyIndex: 1 });

    // The old device learns its key is no longer current; the peer is warned of the reset, loudly.
    const old = await chat("carol", ["--json", "inbox"]);
    expect(warnings(old, "OWN_KEY_REPLACED"), old.stderr).to.have.length(1);
    const sent = ok(await chat("alice", ["--json", "send", "carol", "new device?"]), "alice writes to carol");
    expect(warnings(sent, "KEY_RESET")).to.have.length(1);
    expect(sent.stderr).to.match(/^!!! WARNING: carol's key was RESET/m);
    const inbox = ok(await chat("carol_new", ["--json", "inbox"]), "carol reads on the new device");
    expect(inbox.json.find((o) => o.type === "message")).to.include({ from: "alice", body: "new device?" });
  });
});
