/**
 * `chat device ...` as people run it: real `chat` processes (each device its own home) against a real relay
 * process and an anvil chain with ChatRegistry. alice links a laptop (code and fingerprint shown on both
 * sides), messages reach both of her devices and her own messages appear on the other one; the device limit
 * is enforced; revoking the laptop ends its session, removes it from every group and rotates alice's key,
 * and the relay's log replayed against the laptop's saved state opens nothing sent afterwards. A last test
 * measures a revocation for a user in many groups.
 */
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ChainReader } from "../../client-core/chain-reader";
import { Home } from "../../cli/home";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { openBytes } from "../../client-core/device-store";
import { DsClient } from "../../cli/mls/ds-client";
import { FileSessionStore } from "../../cli/stores/session-store";
import { deviceAuthenticationService, mlsClientConfig, openGroupState, processIncomingMessage } from "../../protocol/mls";
import { decodeBase64 } from "../../protocol/wire-v2";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { contractServedBy, runChat, type ChatResult } from "../helpers/chat-process";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { waitFor } from "../helpers/wait";
import { homeDeviceStore } from "../../cli/mls/device-files";

const ROOT = path.resolve(__dirname, "../..");
const CLIENT_ENV = { CHAT_INSECURE_FAST_KDF: "1" };
const MAX_DEVICES = 3;
const BENCH_GROUPS = Number(process.env.DEVICE_BENCH_GROUPS ?? 20);
const password = (user: string) => `${user}-Secret-pw-1`;

describe("chat device (real chat processes, relay and chain)", function () {
  this.timeout(900_000);
  let anvil: AnvilNode;
  let registry: DeployedRegistry;
  let relay: RelayProcess;
  let tmp: string;
  let reader: ChainReader | undefined;
  let laptopId: string;
  let directGroupId: string;
  const children: ChildProcess[] = [];

  const home = (name: string) => path.join(tmp, name);
  const chat = (homeName: string, args: string[], input?: string) =>
    runChat({ home: home(homeName), relay: relay.url, rpc: anvil.url, args, input, env: CLIENT_ENV, timeoutMs: 300_000 });
  const ok = (result: ChatResult, what: string) => {
    expect(result.code, `${what} failed:\n${result.stdout}\n${result.stderr}`).to.equal(0);
    return result;
  };
  const fails = (result: ChatResult, code: string, what: string) => {
    expect(result.code, `${what} should have failed:\n${result.stdout}\n${result.stderr}`).to.equal(1);
    expect(result.stderr, what).to.include(`chat: ${code}:`);
    return result;
  };
  const tls = async () => ({ ca: relay.certificate!, checkServerIdentity: () => undefined });

  /** `chat device link` left running: its code and fingerprint as soon as it prints them, and its end. */
  async function startLink(homeName: string, user: string, name: string) {
    const contract = await contractServedBy(relay.url);
    const child = spawn(
      process.execPath,
      [path.join(ROOT, "bin/chat.js"), "--home", home(homeName), "--relay", relay.url, "--rpc", anvil.url, "--contract", contract!, "--json", "--password-stdin", "device", "link", user, "--name", name],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? "", HOME: home(homeName), ...CLIENT_ENV }, stdio: ["pipe", "pipe", "pipe"] },
    );
    children.push(child);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk) => (stdout += chunk));
    child.stderr!.on("data", (chunk) => (stderr += chunk));
    child.stdin!.end(`${password(user)}\n`);
    const done = new Promise<ChatResult>((resolve) =>
      child.on("close", (code) => resolve({ code, stdout, stderr, json: stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)) })),
    );
    let exited = false;
    void done.then(() => (exited = true));
    await waitFor(`${homeName}'s link code`, () => exited || stdout.includes('"device-link"'), 120_000, 200);
    const request = stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).find((o) => o.type === "device-link");
    if (!request) expect.fail(`no link code:\n${stdout}\n${stderr}`);
    return { code: request.code as string, fingerprint: request.fingerprint as string, done, child };
  }

  /** A linked device's state key, opened as the device itself does (its password, then its device secret). */
  async function linkedStateKey(homeName: string, user: string) {
    const store = homeDeviceStore(new Home(home(homeName)), user);
    return store.linkedStateKey(await store.readDeviceSecret(password(user)));
  }

  before(async () => {
    anvil = await startAnvil();
    registry = await deployRegistry({ rpcUrl: anvil.url });
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-devices-"));
    relay = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: registry.address,
      deployBlock: registry.deployBlock,
      relayerKey: registry.relayerKey,
      dataDir: path.join(tmp, "relay"),
      env: { CREDENTIAL_PEPPER: randomBytes(32).toString("hex"), SESSION_SECRET: randomBytes(32).toString("hex"), MAX_DEVICES_PER_USER: String(MAX_DEVICES) },
    });
    for (const who of ["alice", "bob"]) ok(await chat(who, ["--password-stdin", "register", who], `${password(who)}\n`), `register ${who}`);
    const sent = ok(await chat("alice", ["--json", "send", "bob", "before the laptop"]), "first send").json.find((o) => o.type === "sent");
    directGroupId = sent.groupId;
    ok(await chat("alice", ["group", "create", "team", "--with", "bob"]), "create #team");
    ok(await chat("bob", ["inbox"]), "bob's first inbox");
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    reader?.close();
    await relay?.stop();
    await anvil?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("links a second device: the same fingerprint on both sides; it joins every conversation", async () => {
    const link = await startLink("alice-laptop", "alice", "laptop");
    expect(link.code).to.match(/^[0-9A-Z]{8}$/);
    // Typed as a person might: lower case, with a dash.
    const typed = `${link.code.slice(0, 4)}-${link.code.slice(4)}`.toLowerCase();
    const approved = ok(await chat("alice", ["--json", "--password-stdin", "--yes", "device", "approve", typed], `${password("alice")}\n`), "approve");
    const view = approved.json.find((o) => o.type === "device-approved");
    expect(view.fingerprint).to.equal(link.fingerprint);
    expect(view.name).to.equal("laptop");
    laptopId = view.deviceId;
    const joined = approved.json.filter((o) => o.type === "group-event" && o.kind === "own-devices");
    expect(joined.map((e) => e.groupId).sort()).to.have.length(2);
    const linked = ok(await link.done, "link").json.find((o) => o.type === "device-linked");
    expect(linked.deviceId).to.equal(laptopId);
    // The laptop never holds the identity key.
    expect(new Home(home("alice-laptop")).exists(path.join(home("alice-laptop"), "users", "alice", "keys"))).to.equal(false);
    expect(new FileSessionStore(new Home(home("alice-laptop"))).read()!.keys).to.deep.equal([]);

    const inbox = ok(await chat("alice-laptop", ["inbox"]), "laptop inbox");
    expect(inbox.stdout).to.include("you joined #team");
    expect(inbox.stdout).to.not.include("before the laptop");
  });

  it("a message to alice reaches both devices; one sent from either appears on the other as sent", async () => {
    // bob's first command after the link catches up the commits that added the laptop: he is told.
    const told = ok(await chat("bob", ["send", "alice", "to both of you"]), "bob sends");
    expect(told.stdout).to.include("alice added a device in alice");
    expect(told.stdout).to.include("alice added a device in #team");
    ok(await chat("bob", ["send", "--group", "team", "team hello"]), "bob sends to #team");
    for (const device of ["alice", "alice-laptop"]) {
      const inbox = ok(await chat(device, ["inbox"]), `${device} inbox`);
      expect(inbox.stdout).to.include("bob: to both of you");
      expect(inbox.stdout).to.include("#team bob: team hello");
    }
    ok(await chat("alice-laptop", ["send", "bob", "from the laptop"]), "laptop sends");
    ok(await chat("alice-laptop", ["send", "--group", "team", "laptop in team"]), "laptop sends to #team");
    const bob = ok(await chat("bob", ["inbox"]), "bob inbox");
    expect(bob.stdout).to.include("alice: from the laptop");
    expect(bob.stdout).to.include("#team alice: laptop in team");
    const alice = ok(await chat("alice", ["--json", "inbox"]), "alice inbox");
    const own = alice.json.filter((o) => o.type === "sent" && o.fromOtherDevice);
    expect(own.map((o) => o.body).sort()).to.deep.equal(["from the laptop", "laptop in team"]);
    const text = ok(await chat("alice", ["send", "bob", "from the first device"]), "alice sends");
    expect(text.code).to.equal(0);
    const laptop = ok(await chat("alice-laptop", ["inbox"]), "laptop inbox");
    expect(laptop.stdout).to.include("you → bob: from the first device  (from your other device)");
    // History: saved as sent on the other device, not as received.
    const history = readFileSync(path.join(home("alice"), "users", "alice", "history", "bob.jsonl"), "utf8");
    expect(history).to.match(/"direction":"out"[^\n]*"body":"from the laptop"/);

    // bob was told of the new device, and counts alice's devices in his own trees.
    const whois = ok(await chat("bob", ["--json", "whois", "alice"]), "whois").json.find((o) => o.type === "whois");
    expect(whois.devices).to.equal(2);
    const list = ok(await chat("alice", ["--json", "device", "list"]), "device list").json.find((o) => o.type === "devices");
    expect(list.maxDevices).to.equal(MAX_DEVICES);
    expect(list.devices.map((d: { name: string | null; thisDevice: boolean }) => [d.name, d.thisDevice])).to.deep.include.members([["laptop", false]]);
    expect(list.devices.filter((d: { thisDevice: boolean }) => d.thisDevice)).to.have.length(1);
  });

  it("enforces the device limit with a clear error", async () => {
    const tablet = await startLink("alice-tablet", "alice", "tablet");
    ok(await chat("alice", ["--password-stdin", "--yes", "device", "approve", tablet.code], `${password("alice")}\n`), "approve the tablet");
    ok(await tablet.done, "tablet link");
    const phone = await startLink("alice-phone", "alice", "phone");
    const refused = fails(await chat("alice", ["--password-stdin", "--yes", "device", "approve", phone.code], `${password("alice")}\n`), "LIMIT_EXCEEDED", "a fourth device");
    expect(refused.stderr).to.include(`${MAX_DEVICES}`);
    phone.child.kill("SIGTERM");
  });

  it("revokes the laptop: its token fails, it is out of every group, the key rotated; it reads nothing sent afterwards", async () => {
    const laptopSession = new FileSessionStore(new Home(home("alice-laptop"))).read()!;
    const revoked = ok(await chat("alice", ["--json", "--password-stdin", "device", "revoke", laptopId], `${password("alice")}\n`), "revoke").json.find(
      (o) => o.type === "device-revoked",
    );
    expect(revoked).to.include({ deviceId: laptopId, transactions: 1, removedFromGroups: 2, credentialsRenewed: 2 });

    // Its session ended at once.
    const laptopClient = new DsClient({ url: relay.url, token: laptopSession.token, deviceId: laptopId, tls });
    let refusal: unknown;
    await laptopClient.sync().catch((error) => (refusal = error));
    expect((refusal as { code?: string })?.code).to.equal("SESSION_REVOKED");
    // Its next command tries to log in again with its own key: refused, the device is revoked.
    fails(await chat("alice-laptop", ["send", "bob", "still here?"]), "FORBIDDEN", "the revoked laptop sending");

    ok(await chat("alice", ["send", "bob", "after revoke: laptop-must-not-see"]), "send after revoke");
    const bob = ok(await chat("bob", ["inbox"]), "bob inbox");
    expect(bob.stdout).to.include("alice: after revoke: laptop-must-not-see");
    expect(bob.stdout).to.include("alice removed a device");
    // The kept tablet picks up its new credential at its next command and reads on.
    const tablet = ok(await chat("alice-tablet", ["inbox"]), "tablet inbox");
    expect(tablet.stdout).to.include("after revoke: laptop-must-not-see");
    ok(await chat("alice-tablet", ["send", "bob", "tablet after the rotation"]), "tablet sends under the new key");
    expect(ok(await chat("bob", ["inbox"]), "bob inbox").stdout).to.include("alice: tablet after the rotation");

    // Playing the relay: the whole log of the chat with bob, handed to the laptop's saved state.
    const bobSession = new FileSessionStore(new Home(home("bob"))).read()!;
    const bobDevice = JSON.parse(readFileSync(path.join(home("bob"), "users", "bob", "mls", "device.json"), "utf8")) as { deviceId: string };
    const entries = (await new DsClient({ url: relay.url, token: bobSession.token, deviceId: bobDevice.deviceId, tls }).log(directGroupId, 0, 1000)).entries;
    const key = await linkedStateKey("alice-laptop", "alice");
    reader ??= await ChainReader.connect(anvil.url);
    const keyBook = chainKeyBook(reader.registry(registry.address));
    const config = mlsClientConfig(deviceAuthenticationService({ keyBook, policy: "lenient", chainId: registry.chainId, contract: registry.address }));
    const saved = JSON.parse(readFileSync(path.join(home("alice-laptop"), "users", "alice", "mls", "groups", `${directGroupId}.json`), "utf8")) as { sealed: string; cursor: number };
    let state = openGroupState({ sealed: decodeBase64(saved.sealed), key, groupId: new Uint8Array(Buffer.from(directGroupId, "hex")), clientConfig: config });
    const opened: string[] = [];
    for (const entry of entries.filter((e) => e.seq > saved.cursor)) {
      try {
        const result = await processIncomingMessage({ state, message: decodeBase64(entry.bytes) });
        if (result.kind === "application") opened.push(result.payload.body);
        if ("state" in result && result.state) state = result.state;
      } catch {
        /* expected: epochs the laptop never reached */
      }
    }
    expect(opened.join("\n")).to.not.include("laptop-must-not-see");

    // The laptop's credential was signed by a key that is no longer current: refused once the rotation grace is over.
    const device = JSON.parse(readFileSync(path.join(home("alice-laptop"), "users", "alice", "mls", "device.json"), "utf8")) as { sealed: string };
    const secrets = JSON.parse(new TextDecoder().decode(openBytes(key, "device", device.sealed))) as { publicKey: string; identity: string };
    const later = Math.floor(Date.now() / 1000) + 3600;
    const reasons: string[] = [];
    const strict = deviceAuthenticationService({ keyBook, policy: "strict", chainId: registry.chainId, contract: registry.address, now: () => later, onRefused: (r) => reasons.push(r.code) });
    const accepted = await strict.validateCredential(
      { credentialType: "basic", identity: new Uint8Array(Buffer.from(secrets.identity, "hex")) },
      new Uint8Array(Buffer.from(secrets.publicKey, "hex")),
    );
    expect(accepted).to.equal(false);
    expect(reasons).to.have.length.greaterThan(0);
  });

  it(`measures revoking a device of a user in ${BENCH_GROUPS} groups (time, transactions, commits)`, async () => {
    for (const who of ["carol", "dave"]) ok(await chat(who, ["--password-stdin", "register", who], `${password(who)}\n`), `register ${who}`);
    const link = await startLink("carol-laptop", "carol", "laptop");
    const approved = ok(await chat("carol", ["--json", "--password-stdin", "--yes", "device", "approve", link.code], `${password("carol")}\n`), "approve");
    const deviceId = approved.json.find((o) => o.type === "device-approved").deviceId;
    ok(await link.done, "link");
    for (let i = 0; i < BENCH_GROUPS; i++) ok(await chat("carol", ["group", "create", `g${i}`, "--with", "dave"]), `create g${i}`);
    const list = ok(await chat("carol", ["--json", "group", "list"]), "list").json.filter((o) => o.type === "group");
    expect(list.length).to.be.at.least(BENCH_GROUPS);
    const started = Date.now();
    const revoked = ok(await chat("carol", ["--json", "--password-stdin", "device", "revoke", deviceId], `${password("carol")}\n`), "revoke").json.find(
      (o) => o.type === "device-revoked",
    );
    const wall = Date.now() - started;
    expect(revoked.removedFromGroups).to.equal(BENCH_GROUPS);
    // One line for the report: what a revocation costs.
    console.log(JSON.stringify({ revoke_groups: BENCH_GROUPS, revoke_ms: revoked.ms, revoke_process_ms: wall, revoke_transactions: revoked.transactions, revoke_commits: revoked.commits }));
  });
});
