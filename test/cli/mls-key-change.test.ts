/**
 * MLS members following on-chain key changes, against a real relay process (MariaDB), a real anvil chain
 * with ChatRegistry, and key histories each client reads from that chain: a rotated device re-authorises
 * its leaf in every group; after a reset the first member to sync removes the old device and adds the new
 * one in one commit.
 */
import { expect } from "chai";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ChainReader } from "../../client-core/chain-reader";
import { Home } from "../../cli/home";
import type { UnlockedKey } from "../../cli/keystore";
import type { Session } from "../../cli/stores/session-store";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { DsClient } from "../../cli/mls/ds-client";
import { MlsDevice, type GroupEvent } from "../../client-core/mls-device";
import { decodeBase64 } from "../../protocol/wire-v2";
import { decodeDeviceIdentity, decodeMlsMessageBytes, ROTATION_GRACE_SECONDS } from "../../protocol/mls";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { login, registerUser, resetUser, rotateUser } from "../relay/accounts-fixture";
import { startChain, type ChainFixture } from "../helpers/chain";
import { runChat } from "../helpers/chat-process";
import { newIdentity, type Identity } from "../helpers/signing";
import { newTestUser, uniqueUsername, type TestUser } from "../helpers/users";
import { waitFor } from "../helpers/wait";
import { homeDeviceStorage } from "../../cli/mls/device-files";

/** test/helpers/registry.ts deploys with this reset delay */
const RESET_DELAY_S = 60;

/** A DsClient whose log and cursor answers a test can replace: a relay handing a removed device everything. */
class TestDsClient extends DsClient {
  logOverride?: (groupId: string, after: number, limit: number) => ReturnType<DsClient["log"]>;
  cursorOverride?: (groupId: string, seq: number) => ReturnType<DsClient["advanceCursor"]>;
  override log(groupId: string, after: number, limit: number) {
    return this.logOverride ? this.logOverride(groupId, after, limit) : super.log(groupId, after, limit);
  }
  override advanceCursor(groupId: string, seq: number) {
    return this.cursorOverride ? this.cursorOverride(groupId, seq) : super.advanceCursor(groupId, seq);
  }
}

type Member = { device: MlsDevice; client: TestDsClient; home: string };

describe("cli/mls: members follow on-chain key changes", function () {
  this.timeout(300_000);
  let chain: ChainFixture;
  let db: TestDatabase;
  let reader: ChainReader;
  let relay: RelayProcess;
  /** seconds added to every device's clock: moves the rotation grace without waiting for it */
  let clockOffset = 0;
  const now = () => Math.floor(Date.now() / 1000) + clockOffset;

  before(async () => {
    chain = await startChain();
    db = await createTestDatabase("chat_mls_keys");
    reader = await ChainReader.connect(chain.anvil.url);
    relay = await startRelayProcess({
      rpcUrl: chain.anvil.url,
      contractAddress: chain.deployed.address,
      deployBlock: chain.deployed.deployBlock,
      relayerKey: chain.deployed.relayerKey,
      mysqlUrl: db.url,
      dataDir: mkdtempSync(path.join(tmpdir(), "chat-mls-keys-relay-")),
      env: { INSECURE_HTTP: "1", LOG_LEVEL: "warn" },
    });
  });
  after(async () => {
    await relay?.stop();
    reader?.close();
    await db?.drop();
    await chain?.close();
  });

  async function user(prefix: string): Promise<TestUser> {
    const u = newTestUser(uniqueUsername(prefix));
    const registered = await registerUser(relay.url, chain.domain, u);
    expect(registered.status, JSON.stringify(registered.body)).to.equal(200);
    return u;
  }

  /** A session token for `u` signed with `signer`, once the relay has seen that key on chain. */
  async function sessionToken(u: TestUser, signer: Identity = u.identity): Promise<string> {
    return waitFor(`a session of ${u.username}`, async () => {
      const session = await login(relay.url, chain.domain, u, { signer });
      return session.status === 200 ? (session.body.token as string) : undefined;
    });
  }

  /** Opens `u`'s device in `home` (a fresh one by default) with the session's identity keys, current first. */
  async function device(u: TestUser, options: { home?: string; keys?: UnlockedKey[]; token?: string } = {}): Promise<Member> {
    const home = options.home ?? mkdtempSync(path.join(tmpdir(), "chat-mls-keys-home-"));
    const token = options.token ?? (await sessionToken(u));
    let client: TestDsClient | undefined;
    const d = await MlsDevice.open({
      storage: homeDeviceStorage(new Home(home), u.username),
      username: u.username,
      identityKeys: options.keys ?? [{ index: 0, privateKey: u.identity.privateKey }],
      chainId: chain.deployed.chainId,
      contract: chain.deployed.address,
      keyBook: chainKeyBook(reader.registry(chain.deployed.address)),
      connect: (deviceId) => (client = new TestDsClient({ url: relay.url, token, deviceId })),
      oneTimeKeyPackages: 3,
      now,
    });
    await d.ensureKeyPackages();
    return { device: d, client: client!, home };
  }

  const bodies = (r: { messages: { body: string }[] }) => r.messages.map((m) => m.body);
  const kinds = (events: GroupEvent[]) => events.map((e) => e.kind);
  /** The key index in the credential of every key package the relay hands out for `username` now. */
  async function claimedKeyIndexes(by: Member, username: string): Promise<number[]> {
    const claimed = await by.client.claimKeyPackages(username);
    return claimed.keyPackages.map((item) => {
      const message = decodeMlsMessageBytes(decodeBase64(item.bytes), "key package");
      if (message.wireformat !== "mls_key_package" || message.keyPackage.leafNode.credential.credentialType !== "basic") throw new Error("not a key package");
      return decodeDeviceIdentity(message.keyPackage.leafNode.credential.identity).keyIndex;
    });
  }

  afterEach(() => {
    clockOffset = 0;
  });

  /** Moves the devices' clocks past the rotation grace, measured from the chain's time (anvil's clock may run ahead). */
  async function passTheGrace(): Promise<void> {
    const block = await chain.provider.getBlock("latest");
    clockOffset = block!.timestamp - Math.floor(Date.now() / 1000) + ROTATION_GRACE_SECONDS + 30;
  }

  it("a rotated device re-authorises in every group; members accept it, and past the grace it still commits", async () => {
    const a = await device(await user("ra"));
    const c = await device(await user("rc"));
    const bUser = await user("rb");
    let b = await device(bUser);
    const direct = await a.device.startDirect(bUser.username);
    const group = await c.device.createGroup([a.device.username, bUser.username]);
    await b.device.sync();
    await a.device.sync();
    await b.device.send(direct, "before the rotation");
    expect(bodies(await a.device.sync())).to.deep.equal(["before the rotation"]);

    const next = newIdentity();
    const rotated = await rotateUser(relay.url, chain, bUser, next);
    expect(rotated.status, JSON.stringify(rotated.body)).to.equal(200);
    // What `chat rotate-key` does next: a session of the new key, the device opened with it.
    b = await device(bUser, {
      home: b.home,
      token: await sessionToken(bUser, next),
      keys: [
        { index: 1, privateKey: next.privateKey },
        { index: 0, privateKey: bUser.identity.privateKey },
      ],
    });
    expect(b.device.keyIndex).to.equal(0);
    const result = await b.device.reauthorize();
    expect(result.keyIndex).to.equal(1);
    expect(b.device.keyIndex).to.equal(1);
    expect(result.events.map((e) => [e.kind, e.groupId]).sort()).to.deep.equal([["reauthorized", direct], ["reauthorized", group]].sort());
    const deviceFile = JSON.parse(readFileSync(path.join(b.home, "users", bUser.username, "mls", "device.json"), "utf8"));
    expect(deviceFile.keyIndex).to.equal(1);
    // The relay hands out only packages carrying the new credential; a second run has nothing to do.
    expect(await claimedKeyIndexes(a, bUser.username)).to.deep.equal([1]);
    expect((await b.device.reauthorize()).events).to.deep.equal([]);

    for (const m of [a, c]) {
      const got = await m.device.sync();
      expect(kinds(got.events), JSON.stringify(got.events)).to.not.include("refused");
      expect(got.events.filter((e) => e.kind === "commit" && e.by === bUser.username)).to.have.length(m === a ? 2 : 1);
    }
    const seen = (await a.device.members(direct)).find((m) => m.username === bUser.username)!;
    expect(seen.keyIndex).to.equal(1);
    expect(seen.identityAddress).to.equal(next.address);
    await b.device.send(direct, "from the new key");
    expect(bodies(await a.device.sync())).to.deep.equal(["from the new key"]);
    await a.device.send(direct, "got it");
    expect(bodies(await b.device.sync())).to.deep.equal(["got it"]);

    // Past the grace the old key authorises nothing, and b's leaves no longer rest on it.
    await passTheGrace();
    expect(kinds((await a.device.sync()).events)).to.not.include("members-replaced");
    await b.device.updateKeys(group);
    for (const m of [a, c]) {
      const got = await m.device.sync();
      expect(kinds(got.events), JSON.stringify(got.events)).to.deep.equal(["commit"]);
    }
    await c.device.send(group, "to all three");
    for (const m of [a, b]) expect(bodies(await m.device.sync())).to.deep.equal(["to all three"]);
    expect(new Set([a, b, c].map((m) => m.device.epoch(group))).size).to.equal(1);
  });

  it("after a reset the first member to sync swaps the old device for the new one in one commit; the old state reads nothing", async () => {
    const a = await device(await user("xa"));
    const c = await device(await user("xc"));
    const bUser = await user("xb");
    const bOld = await device(bUser);
    const group = await a.device.createGroup([bUser.username, c.device.username]);
    await bOld.device.sync();
    await c.device.sync();
    await bOld.device.send(group, "from the old device");
    for (const m of [a, c]) expect(bodies(await m.device.sync())).to.deep.equal(["from the old device"]);

    const next = newIdentity();
    const requested = await resetUser(relay.url, chain, bUser, next);
    expect(requested.status, JSON.stringify(requested.body)).to.equal(200);
    await chain.provider.send("evm_increaseTime", [RESET_DELAY_S + 5]);
    await chain.provider.send("evm_mine", []);
    await waitFor("the relay to complete the reset", async () => (await chain.registry.keyCount(bUser.username)) === 2n, 60_000, 200);
    const bNew = await device(bUser, { token: await sessionToken(bUser, next), keys: [{ index: 1, privateKey: next.privateKey }] });

    // The old device's packages (authorised by the reset key) are refused; the new device's are taken.
    const claimed = await c.device.claimKeyPackages(bUser.username);
    expect(claimed.map((p) => p.device.deviceId)).to.deep.equal([bNew.device.deviceId]);
    expect(c.device.refusals.join("\n")).to.match(/was reset/);

    // a and c catch up at once: exactly one of them commits the swap, the other finds it done.
    const [fromA, fromC] = await Promise.all([a.device.sync(), c.device.sync()]);
    const swaps = [...fromA.events, ...fromC.events].filter((e) => e.kind === "members-replaced");
    expect(swaps, JSON.stringify([fromA.events, fromC.events])).to.have.length(1);
    expect(swaps[0]).to.deep.include({ groupId: group, removed: [bUser.username], added: [bUser.username] });
    for (const m of [a, c]) await m.device.sync();
    for (const m of [a, c]) {
      const members = await m.device.members(group);
      expect(members.map((x) => [x.username, x.keyIndex]).sort()).to.deep.equal(
        [[a.device.username, 0], [bUser.username, 1], [c.device.username, 0]].sort(),
      );
    }
    const relayMembers = (await a.client.members(group)).members.map((m) => m.deviceId);
    expect(relayMembers).to.include(bNew.device.deviceId);
    expect(relayMembers).to.not.include(bOld.device.deviceId);

    const joined = await bNew.device.sync();
    expect(kinds(joined.events)).to.include("joined");
    await a.device.send(group, "after the reset");
    expect(bodies(await bNew.device.sync())).to.deep.equal(["after the reset"]);
    await bNew.device.send(group, "new device here");
    for (const m of [a, c]) expect(bodies(await m.device.sync())).to.deep.equal(["after the reset", "new device here"].slice(m === a ? 1 : 0));
    expect(new Set([a, c, bNew].map((m) => m.device.epoch(group))).size).to.equal(1);

    // The old device, handed every entry of the log by a relay that ignores its removal, reads nothing.
    const full = await a.client.log(group, 0, 1000);
    bOld.client.logOverride = async (_g, after) => ({ entries: full.entries.filter((e) => e.seq > after), epoch: full.epoch, lastSeq: full.lastSeq });
    bOld.client.cursorOverride = async (_g, seq) => ({ cursor: seq });
    const replay = await bOld.device.catchUp(group);
    expect(bodies(replay)).to.deep.equal([]);
    expect(kinds(replay.events)).to.include("refused");
    // Nor can it change the group: its own credential rests on the reset key.
    const own = await bOld.device.followKeyChanges();
    expect(own.map((e) => e.kind === "key-change-failed" && e.code)).to.deep.equal(["KEY_UNVERIFIED"]);
  });

  it("chat rotate-key re-authorises the MLS device of its home after the chain transaction", async () => {
    const a = await device(await user("ca"));
    const home = mkdtempSync(path.join(tmpdir(), "chat-mls-keys-cli-"));
    const username = uniqueUsername("cb");
    const password = "cb-Secret-pw-1";
    const chat = (args: string[], input?: string) =>
      runChat({ home, relay: relay.url, rpc: chain.anvil.url, args, input, env: { CHAT_INSECURE_FAST_KDF: "1" }, timeoutMs: 120_000 });
    const registered = await chat(["--password-stdin", "--json", "register", username], `${password}\n`);
    expect(registered.code, registered.stderr).to.equal(0);
    // The home's MLS device, opened with the CLI's own session (its token and unlocked key).
    const session = () => JSON.parse(readFileSync(path.join(home, "session.json"), "utf8")) as Session;
    const before = session();
    const open = (s: Session) =>
      MlsDevice.open({
        storage: homeDeviceStorage(new Home(home), username),
        username,
        identityKeys: s.keys,
        chainId: chain.deployed.chainId,
        contract: chain.deployed.address,
        keyBook: chainKeyBook(reader.registry(chain.deployed.address)),
        connect: (deviceId) => new DsClient({ url: relay.url, token: s.token, deviceId }),
        oneTimeKeyPackages: 3,
        now,
      });
    const b = await open(before);
    await b.ensureKeyPackages();
    const group = await a.device.startDirect(username);
    await b.sync();

    const rotated = await chat(["--password-stdin", "--json", "rotate-key"], `${password}\n`);
    expect(rotated.code, rotated.stderr).to.equal(0);
    expect(rotated.json.find((o) => o.type === "rotated"), rotated.stdout + rotated.stderr).to.include({ keyIndex: 1 });
    // The test relay is plain http on loopback (INSECURE_RELAY); nothing else is warned about.
    expect(rotated.json.filter((o) => o.type === "warning" && o.code !== "INSECURE_RELAY"), rotated.stderr).to.deep.equal([]);
    expect(rotated.stdout + rotated.stderr).to.not.include(session().keys[0].privateKey.slice(2));

    const got = await a.device.sync();
    expect(got.events.filter((e) => e.kind === "commit" && e.by === username), JSON.stringify(got.events)).to.have.length(1);
    expect((await a.device.members(group)).find((m) => m.username === username)!.keyIndex).to.equal(1);
    const after = await open(session());
    expect(after.keyIndex).to.equal(1);
    expect(await claimedKeyIndexes(a, username)).to.deep.equal([1]);
    await a.device.send(group, "after your rotation");
    expect(bodies(await after.sync())).to.deep.equal(["after your rotation"]);
  });

  it("a rotated device that never re-authorised is removed once the grace has passed", async () => {
    const a = await device(await user("ga"));
    const bUser = await user("gb");
    const b = await device(bUser);
    const group = await a.device.createGroup([bUser.username]);
    await b.device.sync();
    const rotated = await rotateUser(relay.url, chain, bUser, newIdentity());
    expect(rotated.status, JSON.stringify(rotated.body)).to.equal(200);
    expect(kinds((await a.device.sync()).events)).to.not.include("members-replaced");
    await passTheGrace();
    const swapped = (await a.device.sync()).events.filter((e) => e.kind === "members-replaced");
    // b's only device still offers packages of the old key: it leaves, and nobody is added for it.
    expect(swapped).to.have.length(1);
    expect(swapped[0]).to.deep.include({ removed: [bUser.username], added: [] });
    expect((await a.device.members(group)).map((m) => m.username)).to.deep.equal([a.device.username]);
    expect((await a.client.members(group)).members.map((m) => m.username)).to.deep.equal([a.device.username]);
  });
});
