/**
 * `chat group ...` as people and scripts run it: real `chat` processes against a real relay process (its
 * default file store under DATA_DIR) and an anvil chain with ChatRegistry. alice creates #team with bob and
 * carol, removes carol, bob leaves; each step is checked from every side, and the relay's log is replayed
 * against carol's saved state from before her removal.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ChainReader } from "../../client-core/chain-reader";
import { Home } from "../../cli/home";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { DsClient } from "../../cli/mls/ds-client";
import { FileSessionStore } from "../../cli/stores/session-store";
import { deviceAuthenticationService, mlsClientConfig, openGroupState, processIncomingMessage } from "../../protocol/mls";
import { decodeBase64 } from "../../protocol/wire-v2";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { runChat, type ChatResult } from "../helpers/chat-process";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { homeDeviceStore } from "../../cli/mls/device-files";

/** Test-only fast key derivation for the client: the subject here is groups, not the KDF. */
const CLIENT_ENV = { CHAT_INSECURE_FAST_KDF: "1" };
const PEOPLE = ["alice", "bob", "carol", "dave"] as const;
type Person = (typeof PEOPLE)[number];

describe("chat group (real chat processes, relay and chain)", function () {
  this.timeout(600_000);
  let anvil: AnvilNode;
  let registry: DeployedRegistry;
  let relay: RelayProcess;
  let tmp: string;
  let groupId: string;
  /** carol's sealed state of #team from before her removal: what a thief or a lying client could keep */
  let carolBefore: string;
  let reader: ChainReader | undefined;

  const home = (who: string) => path.join(tmp, who);
  const chat = (who: Person, args: string[], input?: string) =>
    runChat({ home: home(who), relay: relay.url, rpc: anvil.url, args, input, env: CLIENT_ENV, timeoutMs: 180_000 });
  const ok = (result: ChatResult, what: string) => {
    expect(result.code, `${what} failed:\n${result.stderr}`).to.equal(0);
    return result;
  };
  const fails = (result: ChatResult, code: string, what: string) => {
    expect(result.code, `${what} should have failed:\n${result.stdout}\n${result.stderr}`).to.equal(1);
    expect(result.stderr, what).to.include(`chat: ${code}:`);
    return result;
  };
  const groupFile = (who: Person) => path.join(home(who), "users", who, "mls", "groups", `${groupId}.json`);

  before(async () => {
    anvil = await startAnvil();
    registry = await deployRegistry({ rpcUrl: anvil.url });
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-groups-"));
    relay = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: registry.address,
      deployBlock: registry.deployBlock,
      relayerKey: registry.relayerKey,
      dataDir: path.join(tmp, "relay"),
      env: { CREDENTIAL_PEPPER: randomBytes(32).toString("hex"), SESSION_SECRET: randomBytes(32).toString("hex") },
    });
    for (const who of PEOPLE) ok(await chat(who, ["--password-stdin", "register", who], `${who}-Secret-pw-1\n`), `register ${who}`);
  });

  after(async () => {
    reader?.close();
    await relay?.stop();
    await anvil?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("create #team with bob and carol; a group message reaches both; list and show", async () => {
    const created = ok(await chat("alice", ["--json", "group", "create", "team", "--with", "bob,carol"]), "create").json.find((o) => o.type === "group-created");
    expect(created.name).to.equal("team");
    expect(created.members.slice().sort()).to.deep.equal(["alice", "bob", "carol"]);
    groupId = created.groupId;
    expect(groupId).to.match(/^[0-9a-f]{64}$/);
    const text = ok(await chat("alice", ["group", "list"]), "list");
    expect(text.stdout).to.match(new RegExp(`#team\\s+${groupId.slice(0, 8)}\\s+3 members\\s+epoch 1`));

    ok(await chat("alice", ["send", "--group", "team", "hello team"]), "send --group");
    for (const who of ["bob", "carol"] as const) {
      const inbox = ok(await chat(who, ["inbox"]), `${who} inbox`);
      expect(inbox.stdout).to.include("#team alice: hello team");
      expect(inbox.stdout).to.include("-- you joined #team");
    }

    // bob sees the same members, each with the identity key's fingerprint (as whois) and a device fingerprint.
    const shown = ok(await chat("bob", ["--json", "group", "show", "team"]), "show").json.find((o) => o.type === "group-show");
    expect(shown.groupId).to.equal(groupId);
    expect(shown.epoch).to.equal(1);
    expect(shown.members.map((m: { username: string }) => m.username)).to.deep.equal(["alice", "bob", "carol"]);
    const whois = ok(await chat("bob", ["--json", "whois", "carol"]), "whois").json.find((o) => o.type === "whois");
    const carolRow = shown.members.find((m: { username: string }) => m.username === "carol");
    expect(carolRow.keyFingerprint).to.equal(whois.keys[0].fingerprint);
    expect(carolRow.deviceFingerprint).to.match(/^[0-9a-f]{4}( [0-9a-f]{4}){7}$/);
    expect(shown.members.find((m: { username: string }) => m.username === "bob").you).to.equal(true);
    const showText = ok(await chat("bob", ["group", "show", "team"]), "show text").stdout;
    expect(showText).to.include(`#team  id ${groupId}  epoch 1`);
    expect(showText).to.include(carolRow.keyFingerprint);
    expect(showText).to.include(carolRow.deviceFingerprint);
  });

  it("refuses what makes no sense, with a clear code and a non-zero exit", async () => {
    fails(await chat("alice", ["group", "show", "nosuchgroup"]), "NOT_FOUND", "unknown group");
    fails(await chat("alice", ["group", "add", "team", "nobody_here"]), "UNKNOWN_USER", "unknown user");
    fails(await chat("alice", ["group", "add", "team", "bob"]), "BAD_REQUEST", "already in");
    fails(await chat("alice", ["group", "add", "team", "alice"]), "USAGE", "adding yourself");
    fails(await chat("alice", ["group", "remove", "team", "dave"]), "NOT_FOUND", "not in the group");
    const self = fails(await chat("alice", ["group", "remove", "team", "alice"]), "USAGE", "removing yourself");
    expect(self.stderr).to.include("chat group leave");
    fails(await chat("alice", ["group", "create", "x".repeat(129)]), "USAGE", "name too long");
    fails(await chat("alice", ["group", "create", "team"]), "USAGE", "a second #team");
    fails(await chat("alice", ["group", "create", "bad\u001b[31mname"]), "USAGE", "control characters");
    const json = fails(await chat("alice", ["--json", "group", "add", "team", "Bob!"]), "INVALID_USERNAME", "invalid username");
    expect(json.json.at(-1).type).to.equal("error");
    // Nothing above changed the group.
    expect(ok(await chat("alice", ["--json", "group", "list"]), "list").json.find((o) => o.groupId === groupId)).to.include({ members: 3, epoch: 1 });
  });

  it("add dave: the others see who added whom; rename reaches every member", async () => {
    const added = ok(await chat("alice", ["--json", "group", "add", "team", "dave"]), "add").json.find((o) => o.type === "group-added");
    expect(added).to.include({ epoch: 2 });
    const bob = ok(await chat("bob", ["inbox"]), "bob inbox").stdout;
    expect(bob).to.include("-- alice added dave to #team");
    // The name is sent again for dave; the others are not told of a rename that is none.
    expect(bob).to.not.include("named the group");
    expect(ok(await chat("dave", ["inbox"]), "dave inbox").stdout).to.include("-- you joined #team");
    ok(await chat("carol", ["inbox"]), "carol inbox");

    ok(await chat("dave", ["group", "rename", "team", "crew"]), "rename");
    expect(ok(await chat("alice", ["inbox"]), "alice inbox").stdout).to.include("-- dave named the group #crew");
    ok(await chat("alice", ["group", "rename", "crew", "team"]), "rename back");
    for (const who of ["bob", "carol", "dave"] as const) expect(ok(await chat(who, ["inbox"]), `${who} inbox`).stdout).to.include("-- alice named the group #team");
  });

  it("remove carol: she is told, reads nothing after, and her old state cannot open what follows", async () => {
    carolBefore = path.join(tmp, "carol-team-before.json");
    copyFileSync(groupFile("carol"), carolBefore);
    const removed = ok(await chat("alice", ["--json", "group", "remove", "team", "carol"]), "remove").json.find((o) => o.type === "group-removed");
    expect(removed.members.slice().sort()).to.deep.equal(["alice", "bob", "dave"]);
    ok(await chat("alice", ["send", "--group", "team", "after carol: secret-marker"]), "send after removal");

    const carol = ok(await chat("carol", ["inbox"]), "carol inbox");
    expect(carol.stdout).to.include("-- you are no longer in #team");
    expect(carol.stdout).to.not.include("secret-marker");
    expect(ok(await chat("carol", ["inbox"]), "carol inbox again").stdout).to.not.include("secret-marker");
    expect(ok(await chat("carol", ["group", "list"]), "carol list").stdout).to.match(/#team\s+[0-9a-f]{8}\s+removed from it/);
    fails(await chat("carol", ["send", "--group", "team", "still here?"]), "NOT_FOUND", "carol sending");
    for (const who of ["bob", "dave"] as const) {
      const inbox = ok(await chat(who, ["inbox"]), `${who} inbox`);
      expect(inbox.stdout).to.include("-- alice removed carol from #team");
      expect(inbox.stdout).to.include("#team alice: after carol: secret-marker");
    }

    // Playing the relay: the whole log, read over HTTP with alice's session, handed to carol's old state.
    const entries = await readLogAs("alice");
    const removal = entries.filter((e) => e.kind === "handshake").at(-1)!;
    const secret = entries.filter((e) => e.kind === "application").at(-1)!;
    expect(secret.seq).to.be.greaterThan(removal.seq);
    const state = await carolStateFrom(carolBefore);
    let opened: string | undefined;
    try {
      const direct = await processIncomingMessage({ state, message: decodeBase64(secret.bytes) });
      if (direct.kind === "application") opened = direct.payload.body;
    } catch {
      /* expected: the message is of an epoch carol never reached */
    }
    const afterCommit = await processIncomingMessage({ state, message: decodeBase64(removal.bytes) });
    if (afterCommit.kind !== "removed") expect.fail(`the commit that removed carol was read as ${afterCommit.kind}`);
    try {
      const next = await processIncomingMessage({ state: afterCommit.state, message: decodeBase64(secret.bytes) });
      if (next.kind === "application") opened = next.payload.body;
    } catch {
      /* expected: no epoch secret for a removed member */
    }
    expect(opened, "carol's old state opened a message sent after her removal").to.equal(undefined);
  });

  it("bob leaves: after alice's next inbox he is out of the tree and gets nothing new", async () => {
    const left = ok(await chat("bob", ["group", "leave", "team"]), "leave");
    expect(left.stdout).to.include("You left #team");
    expect(ok(await chat("bob", ["--json", "group", "list"]), "bob list").json.find((o) => o.groupId === groupId)).to.include({ status: "left" });
    fails(await chat("bob", ["group", "show", "team"]), "NOT_FOUND", "bob showing a group he left");

    const inbox = ok(await chat("alice", ["inbox"]), "alice inbox");
    expect(inbox.stdout).to.include("-- bob left #team");
    const shown = ok(await chat("alice", ["--json", "group", "show", "team"]), "show").json.find((o) => o.type === "group-show");
    expect(shown.members.map((m: { username: string }) => m.username)).to.deep.equal(["alice", "dave"]);

    ok(await chat("alice", ["send", "--group", "team", "after bob: bob-must-not-see"]), "send after bob left");
    expect(ok(await chat("dave", ["inbox"]), "dave inbox").stdout).to.include("#team alice: after bob: bob-must-not-see");
    const bob = ok(await chat("bob", ["inbox"]), "bob inbox");
    expect(bob.stdout).to.not.include("bob-must-not-see");
    const list = ok(await chat("alice", ["--json", "group", "list"]), "alice list").json.find((o) => o.groupId === groupId);
    expect(list).to.include({ status: "member", members: 2, name: "team" });
  });

  /** The group's log as the relay gives it to alice's device (her session token and device id). */
  async function readLogAs(who: Person) {
    const session = new FileSessionStore(new Home(home(who))).read()!;
    const device = JSON.parse(readFileSync(path.join(home(who), "users", who, "mls", "device.json"), "utf8")) as { deviceId: string };
    const client = new DsClient({ url: relay.url, token: session.token, deviceId: device.deviceId, tls: async () => ({ ca: relay.certificate!, checkServerIdentity: () => undefined }) });
    return (await client.log(groupId, 0, 1000)).entries;
  }

  /** carol's saved group state from `file`, opened with her own state key, credentials checked on chain. */
  async function carolStateFrom(file: string) {
    const h = new Home(home("carol"));
    const session = new FileSessionStore(h).read()!;
    const key = homeDeviceStore(h, "carol").stateKey(session.keys);
    reader ??= await ChainReader.connect(anvil.url);
    const config = mlsClientConfig(
      deviceAuthenticationService({ keyBook: chainKeyBook(reader.registry(registry.address)), policy: "strict", chainId: registry.chainId, contract: registry.address }),
    );
    const saved = JSON.parse(readFileSync(file, "utf8")) as { sealed: string };
    return openGroupState({ sealed: decodeBase64(saved.sealed), key, groupId: new Uint8Array(Buffer.from(groupId, "hex")), clientConfig: config });
  }
});
