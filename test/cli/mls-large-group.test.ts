/**
 * A 100-member group through the real relay process and a real chain: 100 users registered on ChatRegistry
 * (straight to the contract from the relayer account, many transactions in flight: sign-up is not the
 * subject), one MLS device each (cli/mls/device.ts) with key packages on the relay, one add of 99 (split into commits)
 * members with their welcomes, then a message read by a few of them, from the first and the second commit.
 * Times and request sizes are printed.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Wallet, hexlify } from "ethers";
import { waitForRelaySync } from "../../bench/accounts";
import { ChainReader } from "../../client-core/chain-reader";
import { Home } from "../../cli/home";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { MlsDevice } from "../../client-core/mls-device";
import { DsClient } from "../../cli/mls/ds-client";
import { signRegistryTypedData } from "../../protocol/eip712";
import { publicKeyOf } from "../../protocol/keys";
import { issueSessionToken } from "../../relay/sessions";
import { ChatRegistry__factory } from "../../typechain-types";
import { startChain, type ChainFixture } from "../helpers/chain";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { homeDeviceStorage } from "../../cli/mls/device-files";

const MEMBERS = 100;

/** Records the size of each commit request: the welcome goes once per added device, so requests grow fast. */
class MeasuredDsClient extends DsClient {
  static commits: { adds: number; welcomeBytes: number; requestBytes: number }[] = [];
  override commit(...args: Parameters<DsClient["commit"]>) {
    const [, body] = args;
    const b64 = (n: number) => 4 * Math.ceil(n / 3);
    const requestBytes = b64(body.bytes.length) + body.welcomes.reduce((sum, w) => sum + b64(w.bytes.length) + 100, 0);
    MeasuredDsClient.commits.push({ adds: body.add.length, welcomeBytes: body.welcomes[0]?.bytes.length ?? 0, requestBytes });
    return super.commit(...args);
  }
}

interface Registered {
  username: string;
  identityKey: string;
  credentialHash: string;
}

/** Registers `usernames` with fresh identity keys, every transaction signed locally with its own nonce; returns the last block. */
async function registerMany(chain: ChainFixture, usernames: string[]): Promise<{ users: Registered[]; lastBlock: number }> {
  const relayer = new Wallet(chain.deployed.relayerKey, chain.provider);
  const registry = ChatRegistry__factory.connect(chain.deployed.address, relayer);
  const head = await chain.provider.getBlock("latest");
  const deadline = BigInt(head!.timestamp) + 3600n;
  let nonce = await chain.provider.getTransactionCount(relayer.address, "pending");
  const users: Registered[] = [];
  const sent = [];
  for (const username of usernames) {
    const identityKey = hexlify(randomBytes(32));
    const publicKey = publicKeyOf(identityKey);
    const credentialHash = hexlify(randomBytes(32));
    const signature = signRegistryTypedData({
      privateKey: identityKey,
      domain: chain.domain,
      data: { primaryType: "Register", message: { username, credentialHash, publicKey, nonce: 0n, deadline } },
    });
    sent.push(await registry.register(username, credentialHash, publicKey, deadline, signature, { nonce: nonce++, gasLimit: 300_000n }));
    users.push({ username, identityKey, credentialHash });
  }
  let lastBlock = 0;
  for (const tx of sent) {
    const receipt = await tx.wait();
    expect(receipt?.status).to.equal(1);
    lastBlock = Math.max(lastBlock, receipt!.blockNumber);
  }
  return { users, lastBlock };
}

describe("cli/mls: a group of 100 through the relay", function () {
  this.timeout(600_000);
  let chain: ChainFixture;
  let relay: RelayProcess;
  let reader: ChainReader;
  let tmp: string;
  const secret = randomBytes(32);

  before(async () => {
    chain = await startChain();
    tmp = mkdtempSync(path.join(tmpdir(), "chat-mls-100-"));
    relay = await startRelayProcess({
      rpcUrl: chain.anvil.url,
      contractAddress: chain.deployed.address,
      deployBlock: chain.deployed.deployBlock,
      relayerKey: chain.deployed.relayerKey,
      dataDir: path.join(tmp, "relay"),
      env: { INSECURE_HTTP: "1", SESSION_SECRET: secret.toString("hex"), CREDENTIAL_PEPPER: randomBytes(32).toString("hex"), LOG_LEVEL: "warn" },
    });
    reader = await ChainReader.connect(chain.anvil.url);
  });

  after(async () => {
    reader?.close();
    await relay?.stop();
    await chain?.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("one call adds 99 members (split into commits that fit the relay); a message is read by several of them, and one of them answers", async () => {
    const times: Record<string, number> = {};
    const clock = async <T>(label: string, work: () => Promise<T>): Promise<T> => {
      const started = performance.now();
      try {
        return await work();
      } finally {
        times[label] = Math.round(performance.now() - started);
      }
    };

    const prefix = `m${randomBytes(3).toString("hex")}`;
    const names = Array.from({ length: MEMBERS }, (_, i) => `${prefix}_${String(i).padStart(3, "0")}`);
    const { users, lastBlock } = await clock("register_ms", () => registerMany(chain, names));
    await waitForRelaySync(async () => (await relay.request("GET", "/healthz")).body, lastBlock);

    // One key book for the process: every device checks credentials against the same chain records.
    const keyBook = chainKeyBook(reader.registry(chain.deployed.address));
    const open = (u: Registered) =>
      MlsDevice.open({
        storage: homeDeviceStorage(new Home(path.join(tmp, u.username)), u.username),
        username: u.username,
        identityKeys: [{ index: 0, privateKey: u.identityKey }],
        chainId: chain.deployed.chainId,
        contract: chain.deployed.address,
        keyBook,
        connect: (deviceId) =>
          new MeasuredDsClient({
            url: relay.url,
            token: issueSessionToken({ secret, username: u.username, keyIndex: 0, credentialHash: u.credentialHash, now: Date.now() }).token,
            deviceId,
          }),
        oneTimeKeyPackages: 1,
      });
    const devices = await clock("devices_ms", async () => {
      const out: MlsDevice[] = [];
      for (const u of users) {
        const device = await open(u);
        await device.ensureKeyPackages();
        out.push(device);
      }
      return out;
    });

    // One call adds all 99: a commit carries the whole Welcome once per added device and the relay takes at most
    // MAX_V2_BODY_BYTES per request, so the device splits the add into as many commits as fit (two here).
    const [creator, ...others] = devices;
    const groupId = await clock("create_and_add_99_ms", () => creator.createGroup(others.map((d) => d.username), "hundred"));
    expect(creator.usernames(groupId)).to.have.length(MEMBERS);
    const epochs = creator.epoch(groupId);
    expect(epochs).to.be.within(2, 4);
    await clock("send_ms", () => creator.send(groupId, "hello, all hundred of you"));

    const readers = [others[0], others[58], others[98]];
    for (const [i, member] of readers.entries()) {
      const got = await clock(`member_${i}_join_and_read_ms`, () => member.sync());
      expect(got.events.map((e) => e.kind)).to.include("joined");
      expect(got.messages.map((m) => [m.from, m.body])).to.deep.equal([[creator.username, "hello, all hundred of you"]]);
      expect(member.usernames(groupId)).to.have.length(MEMBERS);
      expect(member.epoch(groupId)).to.equal(epochs);
    }
    await readers[1].send(groupId, "hello back");
    const back = await clock("creator_read_ms", () => creator.sync());
    expect(back.messages.map((m) => m.body)).to.deep.equal(["hello back"]);
    for (const member of [readers[0], readers[2]]) expect((await member.sync()).messages.map((m) => m.body)).to.deep.equal(["hello back"]);

    const members = (await creator.ds.members(groupId)).members;
    expect(members).to.have.length(MEMBERS);
    const last = MeasuredDsClient.commits.at(-1)!;
    const oneCommitOf99 = Math.round((99 * (4 * Math.ceil(last.welcomeBytes / 3) + 100)) / 1024);
    console.log(`      ${JSON.stringify({ members: MEMBERS, ...times, commits: MeasuredDsClient.commits, estimated_one_commit_of_99_kib: oneCommitOf99 })}`);
  });
});
