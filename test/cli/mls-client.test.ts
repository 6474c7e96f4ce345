/**
 * The MLS client library (cli/mls) against real relay processes sharing one MariaDB, a real anvil chain
 * with ChatRegistry, and key histories read from that chain by each client.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Wallet } from "ethers";
import { ChainReader } from "../../client-core/chain-reader";
import { Home } from "../../cli/home";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { DsClient, type DsAppendResult } from "../../cli/mls/ds-client";
import { MlsDevice } from "../../client-core/mls-device";
import { ChatError, isChatError } from "../../protocol/errors";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { login, registerUser } from "../relay/accounts-fixture";
import { startChain, type ChainFixture } from "../helpers/chain";
import { newTestUser, uniqueUsername, type TestUser } from "../helpers/users";
import { homeDeviceStorage } from "../../cli/mls/device-files";

/** A DsClient whose answers a test can hold back or replace: the relay misbehaving or racing. */
class TestDsClient extends DsClient {
  beforeCommit?: () => Promise<void>;
  conflicts = 0;
  logOverride?: (groupId: string, after: number, limit: number) => ReturnType<DsClient["log"]>;
  claimOverride?: (username: string) => ReturnType<DsClient["claimKeyPackages"]>;

  override async commit(...args: Parameters<DsClient["commit"]>): Promise<DsAppendResult> {
    await this.beforeCommit?.();
    const result = await super.commit(...args);
    if (!result.accepted) this.conflicts++;
    return result;
  }
  override log(groupId: string, after: number, limit: number) {
    return this.logOverride ? this.logOverride(groupId, after, limit) : super.log(groupId, after, limit);
  }
  override claimKeyPackages(username: string) {
    return this.claimOverride ? this.claimOverride(username) : super.claimKeyPackages(username);
  }
}

describe("cli/mls: MLS devices over the relay's Delivery Service", function () {
  this.timeout(240_000);
  let chain: ChainFixture;
  let db: TestDatabase;
  let reader: ChainReader;
  const relays: RelayProcess[] = [];
  const homes: string[] = [];

  before(async () => {
    chain = await startChain();
    db = await createTestDatabase("chat_mls");
    reader = await ChainReader.connect(chain.anvil.url);
    // Two instances, one database: tokens from one are valid on the other.
    const shared = { INSECURE_HTTP: "1", SESSION_SECRET: randomBytes(32).toString("hex"), CREDENTIAL_PEPPER: randomBytes(32).toString("hex"), LOG_LEVEL: "warn" };
    for (let i = 0; i < 2; i++) {
      relays.push(
        await startRelayProcess({
          rpcUrl: chain.anvil.url,
          contractAddress: chain.deployed.address,
          deployBlock: chain.deployed.deployBlock,
          relayerKey: chain.deployed.relayerKey,
          mysqlUrl: db.url,
          dataDir: mkdtempSync(path.join(tmpdir(), "chat-mls-relay-")),
          env: shared,
        }),
      );
    }
  });
  after(async () => {
    for (const relay of relays) await relay.stop();
    reader?.close();
    await db?.drop();
    await chain?.close();
  });

  async function user(prefix: string): Promise<TestUser & { token: string }> {
    const u = newTestUser(uniqueUsername(prefix));
    const registered = await registerUser(relays[0].url, chain.domain, u);
    expect(registered.status, JSON.stringify(registered.body)).to.equal(200);
    const session = await login(relays[0].url, chain.domain, u);
    expect(session.status).to.equal(200);
    return { ...u, token: session.body.token };
  }

  async function device(u: TestUser & { token: string }, options: { relay?: number; signerKey?: string } = {}) {
    const dir = mkdtempSync(path.join(tmpdir(), "chat-mls-home-"));
    homes.push(dir);
    let client: TestDsClient | undefined;
    const d = await MlsDevice.open({
      storage: homeDeviceStorage(new Home(dir), u.username),
      username: u.username,
      identityKeys: [{ index: 0, privateKey: options.signerKey ?? u.identity.privateKey }],
      chainId: chain.deployed.chainId,
      contract: chain.deployed.address,
      keyBook: chainKeyBook(reader.registry(chain.deployed.address)),
      connect: (deviceId) => (client = new TestDsClient({ url: relays[options.relay ?? 0].url, token: u.token, deviceId })),
      oneTimeKeyPackages: 3,
    });
    await d.ensureKeyPackages();
    return { device: d, client: client!, home: dir };
  }

  const bodies = (r: { messages: { body: string }[] }) => r.messages.map((m) => m.body);

  it("one-to-one both ways, the peer offline at first; nothing readable at rest", async () => {
    const alice = await device(await user("a"));
    const bobUser = await user("b");
    const bob = await device(bobUser);
    // bob is offline: alice claims his key package, creates the group and sends.
    const groupId = await alice.device.startDirect(bobUser.username);
    await alice.device.send(groupId, "hello bob, plaintext-marker-1");
    await alice.device.send(groupId, "second");
    expect(await alice.device.startDirect(bobUser.username)).to.equal(groupId);

    const got = await bob.device.sync();
    expect(got.events.map((e) => e.kind)).to.include("joined");
    expect(bodies(got)).to.deep.equal(["hello bob, plaintext-marker-1", "second"]);
    expect(got.messages.every((m) => m.from === alice.device.username)).to.equal(true);
    expect(bob.device.directGroup(alice.device.username)).to.equal(groupId);

    await bob.device.send(groupId, "hi alice");
    expect(bodies(await alice.device.sync())).to.deep.equal(["hi alice"]);
    // nothing is shown twice
    expect(bodies(await bob.device.sync())).to.deep.equal([]);
    expect(alice.device.epoch(groupId)).to.equal(bob.device.epoch(groupId));

    const members = await bob.device.members(groupId);
    expect(members.map((m) => m.username).sort()).to.deep.equal([alice.device.username, bobUser.username].sort());
    expect(members.find((m) => m.username === bobUser.username)!.identityAddress).to.equal(bobUser.identity.address);

    // Sealed at rest: no plaintext and no private key of the device in any file, all files 0600.
    for (const home of [alice.home, bob.home]) {
      const files: string[] = [];
      const walk = (dir: string) => {
        for (const name of readdirSync(dir)) {
          const full = path.join(dir, name);
          if (statSync(full).isDirectory()) walk(full);
          else files.push(full);
        }
      };
      walk(home);
      expect(files.length).to.be.greaterThan(2);
      for (const file of files) {
        expect(readFileSync(file, "utf8")).to.not.include("plaintext-marker");
        expect(statSync(file).mode & 0o777).to.equal(0o600);
      }
    }
  });

  it("a group of 4 with add and remove; the removed member cannot read what follows, even handed the log", async () => {
    const [a, b, c, d] = await Promise.all(["ga", "gb", "gc", "gd"].map(async (p) => device(await user(p))));
    const groupId = await a.device.createGroup([b.device.username, c.device.username]);
    await b.device.sync();
    await c.device.sync();
    await a.device.add(groupId, [d.device.username]);
    expect((await d.device.sync()).events.map((e) => e.kind)).to.include("joined");
    expect((await a.device.members(groupId)).length).to.equal(4);

    await b.device.send(groupId, "to all four");
    for (const m of [a, c, d]) expect(bodies(await m.device.sync())).to.deep.equal(["to all four"]);

    // c's saved state from before its removal, which a thief or a lying client could keep using
    const cGroupFile = path.join(c.home, "users", c.device.username, "mls", "groups", `${groupId}.json`);
    const beforeRemoval = readFileSync(cGroupFile, "utf8");
    await a.device.remove(groupId, [c.device.username]);
    await b.device.send(groupId, "after c left");
    // the relay no longer lists the group for c; c's sync reads it anyway and learns of its removal
    const removedView = await c.device.sync();
    expect(removedView.events.map((e) => e.kind)).to.include("removed");
    expect(c.device.groups().find((g) => g.groupId === groupId)!.removed).to.equal(true);
    expect(bodies(removedView)).to.deep.equal([]);
    for (const m of [a, d]) expect(bodies(await m.device.sync())).to.deep.equal(["after c left"]);

    // The relay refuses c the log now...
    try {
      await c.client.log(groupId, 0, 10);
      expect.fail("a removed device read the log");
    } catch (error) {
      expect(isChatError(error) && error.code).to.equal("NOT_GROUP_MEMBER");
    }
    // ...and a relay that hands c's old state every later entry anyway, without the commit that removed
    // it or with it, gives it nothing readable.
    const full = await a.client.log(groupId, 0, 1000);
    const removalSeq = Math.max(...full.entries.filter((e) => e.kind === "handshake").map((e) => e.seq));
    expect(full.entries.some((e) => e.kind === "application" && e.seq > removalSeq)).to.equal(true);
    for (const entries of [full.entries.filter((e) => e.seq !== removalSeq), full.entries]) {
      writeFileSync(cGroupFile, beforeRemoval);
      c.client.logOverride = async (_g, after) => ({ entries: entries.filter((e) => e.seq > after), epoch: full.epoch, lastSeq: full.lastSeq });
      const replay = await c.device.catchUp(groupId);
      expect(bodies(replay)).to.deep.equal([]);
      expect(replay.events.map((e) => e.kind)).to.satisfy((kinds: string[]) => kinds.includes("refused") || kinds.includes("removed"));
    }

    expect((await a.device.members(groupId)).map((m) => m.username).sort()).to.deep.equal(
      [a, b, d].map((m) => m.device.username).sort(),
    );
    expect(new Set([a, b, d].map((m) => m.device.epoch(groupId))).size).to.equal(1);
  });

  it("two members commit in the same epoch through two relay instances: one wins, the other catches up and retries", async () => {
    const a = await device(await user("ra"), { relay: 0 });
    const b = await device(await user("rb"), { relay: 1 });
    const x = await device(await user("rx"), { relay: 0 });
    const y = await device(await user("ry"), { relay: 1 });
    const groupId = await a.device.createGroup([b.device.username]);
    await b.device.sync();
    const start = a.device.epoch(groupId);

    // b builds its commit on the same epoch as a, and is only let through once a's commit has won.
    let releaseB!: () => void;
    const aWon = new Promise<void>((resolve) => (releaseB = resolve));
    let held = false;
    b.client.beforeCommit = async () => {
      if (held) return;
      held = true;
      await aWon;
    };
    const bAdds = b.device.add(groupId, [y.device.username]);
    await new Promise((r) => setTimeout(r, 300));
    await a.device.add(groupId, [x.device.username]);
    releaseB();
    await bAdds;
    expect(b.client.conflicts).to.equal(1);

    for (const m of [a, b, x, y]) await m.device.sync();
    const epochs = [a, b, x, y].map((m) => m.device.epoch(groupId));
    expect(new Set(epochs).size).to.equal(1);
    expect(epochs[0]).to.equal(start + 2);
    const memberships = await Promise.all([a, b, x, y].map(async (m) => (await m.device.members(groupId)).map((u) => u.username).sort().join(",")));
    expect(new Set(memberships).size).to.equal(1);
    expect(memberships[0].split(",").length).to.equal(4);
    await y.device.send(groupId, "from y via relay 1");
    expect(bodies(await x.device.sync())).to.deep.equal(["from y via relay 1"]);
  });

  it("a commit whose answer was lost is adopted when its echo comes back in the log", async () => {
    const a = await device(await user("pa"));
    const b = await device(await user("pb"));
    const groupId = await a.device.startDirect(b.device.username);
    await b.device.sync();
    const original = a.client.commit.bind(a.client);
    a.client.commit = async (...args) => {
      await original(...args);
      throw new ChatError("RELAY_UNREACHABLE", "connection reset after the relay stored the commit");
    };
    const before = a.device.epoch(groupId);
    try {
      await a.device.updateKeys(groupId);
      expect.fail("the lost answer was not reported");
    } catch (error) {
      expect(isChatError(error) && error.code).to.equal("RELAY_UNREACHABLE");
    }
    a.client.commit = original;
    expect(a.device.epoch(groupId)).to.equal(before);
    await a.device.catchUp(groupId);
    expect(a.device.epoch(groupId)).to.equal(before + 1);
    await a.device.send(groupId, "after the lost answer");
    expect(bodies(await b.device.sync())).to.deep.equal(["after the lost answer"]);
    expect(b.device.epoch(groupId)).to.equal(before + 1);
  });

  it("a member offline for 50 epochs catches up", async () => {
    const a = await device(await user("oa"));
    const m = await device(await user("om"), { relay: 1 });
    const groupId = await a.device.createGroup([m.device.username]);
    await m.device.sync();
    for (let i = 0; i < 50; i++) {
      await a.device.updateKeys(groupId);
      if (i % 10 === 9) await a.device.send(groupId, `after update ${i + 1}`);
    }
    const got = await m.device.sync();
    expect(m.device.epoch(groupId)).to.equal(a.device.epoch(groupId));
    expect(got.events.filter((e) => e.kind === "commit").length).to.equal(50);
    expect(bodies(got)).to.deep.equal([10, 20, 30, 40, 50].map((n) => `after update ${n}`));
    await m.device.send(groupId, "back");
    expect(bodies(await a.device.sync())).to.deep.equal(["back"]);
  });

  it("a key package authorised by another user's key is refused, and so is a relay substituting one", async () => {
    const alice = await device(await user("ka"));
    const malloryUser = await user("km");
    // mallory's device credential is signed by a key that is not mallory's on-chain key
    await device(malloryUser, { signerKey: Wallet.createRandom().privateKey });
    try {
      await alice.device.startDirect(malloryUser.username);
      expect.fail("a key package not authorised by its user's key was accepted");
    } catch (error) {
      expect(isChatError(error) && error.code).to.equal("KEY_UNVERIFIED");
    }
    expect(alice.device.refusals.join("\n")).to.match(/KEY_MISMATCH/);

    // a relay answering a claim for bob with eve's genuine package is caught by the name in the credential
    const bobUser = await user("kb");
    await device(bobUser);
    const eveUser = await user("ke");
    await device(eveUser);
    alice.client.claimOverride = (username) => DsClient.prototype.claimKeyPackages.call(alice.client, username === bobUser.username ? eveUser.username : username);
    try {
      await alice.device.startDirect(bobUser.username);
      expect.fail("a substituted key package was accepted");
    } catch (error) {
      expect(isChatError(error) && error.code).to.equal("KEY_MISMATCH");
    }
    expect(alice.device.groups()).to.deep.equal([]);
  });
});
