/**
 * The chain cache: `relay resync` after truncating the tables restores them exactly; a reset chain is
 * detected and keys are refused (503 CACHE_STALE) until the cache is rebuilt; settings are validated
 * with one clear line; the relay process serves TLS with a certificate it generates once and reuses.
 */
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { newIdentity } from "../helpers/signing";
import { deployRegistry } from "../helpers/registry";
import type { TestDatabase } from "../helpers/mysql";
import { relayEnv, spawnRelay, startRelayProcess } from "../helpers/relay-process";
import { waitFor } from "../helpers/wait";
import { ConfigError, parseConfig } from "../../relay/config";
import { startChain, type ChainFixture } from "../helpers/chain";
import { newTestUser, uniqueUsername, randomCredential } from "../helpers/users";
import {
  api,
  changeCredential,
  login,
  registerUser,
  resetUser,
  rotateUser,
  startRelay,
  testEnv,
  withDatabase,
  type RelayFixture,
} from "./accounts-fixture";

async function runRelay(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnRelay(args, env);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (c) => (stdout += c));
  child.stderr!.on("data", (c) => (stderr += c));
  const [code] = await once(child, "exit");
  return { code, stdout, stderr };
}

async function dump(relay: RelayFixture) {
  const [users] = await relay.pool!.query<any[]>("SELECT * FROM users ORDER BY username");
  const [keys] = await relay.pool!.query<any[]>("SELECT * FROM key_history ORDER BY username, idx");
  const [pendingResets] = await relay.pool!.query<any[]>("SELECT * FROM pending_resets ORDER BY username");
  return { users, keys, pendingResets };
}

describe("relay chain cache (anvil + MariaDB)", function () {
  this.timeout(90_000);
  let chain: ChainFixture;
  let db: TestDatabase;
  let relay: RelayFixture;

  before(async () => {
    chain = await startChain();
    db = await withDatabase();
    relay = await startRelay({ chain, db });
  });
  after(async () => {
    await relay?.close();
    await db?.drop();
    await chain?.close();
  });

  it("rebuilds exactly the same tables with `relay resync` after they are truncated", async () => {
    const users = [newTestUser(uniqueUsername("r")), newTestUser(uniqueUsername("r")), newTestUser(uniqueUsername("r"))];
    for (const u of users) expect((await registerUser(relay.url, chain.domain, u)).status).to.equal(200);
    expect((await rotateUser(relay.url, chain, users[0], newIdentity())).status).to.equal(200);
    expect((await resetUser(relay.url, chain, users[1], newIdentity())).status).to.equal(200);
    const session = await login(relay.url, chain.domain, users[2]);
    expect((await changeCredential(relay.url, chain, users[2], randomCredential(), session.body.token)).status).to.equal(200);
    const before = await dump(relay);
    const [syncBefore] = await relay.pool!.query<any[]>("SELECT * FROM sync_state");
    expect(before.users).to.have.length(3);
    expect(before.keys).to.have.length(4); // the reset is only requested: pending until the delay passes
    expect(before.pendingResets).to.have.length(1);

    await relay.relay.syncer.stop(); // this process's sync must not refill the tables meanwhile
    for (const table of ["users", "key_history", "sync_state", "pending_resets"]) await relay.pool!.query(`TRUNCATE TABLE ${table}`);
    expect((await dump(relay)).users).to.have.length(0);

    const env = relayEnv({
      rpcUrl: chain.anvil.url,
      contractAddress: chain.deployed.address,
      deployBlock: chain.deployed.deployBlock,
      relayerKey: chain.deployed.relayerKey,
      mysqlUrl: db.url,
      dataDir: path.join(tmpdir(), "unused"),
      port: 0,
      env: { LOG_LEVEL: "info" },
    });
    const started = Date.now();
    const result = await runRelay(["resync"], env);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout).to.include("resync done");
    console.log(`      resync process: ${Date.now() - started} ms`);

    const after = await dump(relay);
    expect(after).to.deep.equal(before);
    const [syncAfter] = await relay.pool!.query<any[]>("SELECT chain_id, contract_address, deploy_block FROM sync_state");
    expect(syncAfter[0]).to.deep.equal({
      chain_id: syncBefore[0].chain_id,
      contract_address: syncBefore[0].contract_address,
      deploy_block: syncBefore[0].deploy_block,
    });
    relay.relay.syncer.start();
  });

  it("lets two relay instances share the cache: either syncs, a challenge from one logs in on the other", async () => {
    const second = await startRelay({ chain, db, config: { ...relay.config } });
    try {
      const users = [newTestUser(uniqueUsername("two")), newTestUser(uniqueUsername("two")), newTestUser(uniqueUsername("two"))];
      // Registrations through both instances, both syncing the same tables concurrently.
      const results = await Promise.all(users.map((u, i) => registerUser(i % 2 ? second.url : relay.url, chain.domain, u)));
      for (const r of results) expect(r.status, JSON.stringify(r.body)).to.equal(200);
      for (const u of users) {
        const keys = await api(second.url, "GET", `/v1/users/${u.username}/keys`);
        expect(keys.status).to.equal(200);
      }
      const challenge = await api(relay.url, "POST", "/v1/login/challenge", { username: users[0].username });
      const { Wallet } = await import("ethers");
      const { loginMessage } = await import("../../protocol/wire");
      const signature = await new Wallet(users[0].identity.privateKey).signMessage(
        loginMessage({ username: users[0].username, challenge: challenge.body.challenge, chainId: "31337", contractAddress: chain.deployed.address }),
      );
      const body = { username: users[0].username, credential: users[0].credential, challenge: challenge.body.challenge, signature };
      expect((await api(second.url, "POST", "/v1/login", body)).status).to.equal(200);
      expect((await api(relay.url, "POST", "/v1/login", body)).body.error.code).to.equal("CHALLENGE_INVALID");
      const [rows] = await relay.pool!.query<any[]>("SELECT COUNT(*) AS n FROM key_history WHERE username LIKE 'two\\_%'");
      expect(Number(rows[0].n)).to.equal(3);
    } finally {
      await second.close();
    }
  });

  it("detects a reset chain, refuses keys with CACHE_STALE, and serves again once rebuilt", async () => {
    const alice = newTestUser(uniqueUsername("stale"));
    expect((await registerUser(relay.url, chain.domain, alice)).status).to.equal(200);
    expect((await api(relay.url, "GET", `/v1/users/${alice.username}/keys`)).status).to.equal(200);

    await chain.provider.send("anvil_reset", []);
    const health = await waitFor("the relay to see its cache is stale", async () => {
      const answer = await api(relay.url, "GET", "/healthz");
      return answer.body.sync.stale && answer;
    }, 10_000, 50);
    expect(health.status).to.equal(503);
    expect(health.body.sync.stale).to.equal(true);
    const keys = await api(relay.url, "GET", `/v1/users/${alice.username}/keys`);
    expect(keys.status).to.equal(503);
    expect(keys.body.error.code).to.equal("CACHE_STALE");
    const loginAttempt = await login(relay.url, chain.domain, alice);
    expect(loginAttempt.status).to.equal(503);
    expect(loginAttempt.body.error.code).to.equal("CACHE_STALE");

    // The same deployer deploys again at the same address on the fresh chain: the relay rebuilds.
    const redeployed = await deployRegistry({ rpcUrl: chain.anvil.url });
    expect(redeployed.address).to.equal(chain.deployed.address);
    const bob = newTestUser(uniqueUsername("fresh"));
    await waitFor("a registration on the fresh chain", async () => (await registerUser(relay.url, chain.domain, bob)).status === 200, 30_000, 50);
    await waitFor("a healthy relay", async () => (await api(relay.url, "GET", "/healthz")).status === 200, 10_000, 50);
    expect((await api(relay.url, "GET", `/v1/users/${bob.username}/keys`)).status).to.equal(200);
    const gone = await api(relay.url, "GET", `/v1/users/${alice.username}/keys`);
    expect(gone.status).to.equal(404);
    const [rows] = await relay.pool!.query<any[]>("SELECT username FROM users");
    expect(rows.map((r) => r.username)).to.deep.equal([bob.username]);
  });
});

describe("relay settings", function () {
  this.timeout(30_000);
  const base = {
    RPC_URL: "http://127.0.0.1:8545",
    CONTRACT_ADDRESS: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    PRIVATE_KEY: "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    CREDENTIAL_PEPPER: "11".repeat(32),
    SESSION_SECRET: "22".repeat(32),
  };

  it("applies the documented defaults", () => {
    const config = parseConfig(base);
    expect(config).to.include({ host: "127.0.0.1", port: 8443, deployBlock: 0, insecureHttp: false, mysqlUrl: null, redisUrl: null, dataDir: "./data" });
    expect(config.maxFrameBytes).to.equal(65536);
    expect(config.mailboxTtlMs).to.equal(30 * 86_400_000);
    expect(config.loginRateLimit.perUser).to.equal(10);
  });

  for (const [name, value, pattern] of [
    ["SESSION_SECRET", "", /SESSION_SECRET: missing/],
    ["CREDENTIAL_PEPPER", "abc", /CREDENTIAL_PEPPER: expected 64 hex/],
    ["PORT", "eighty", /PORT: expected a whole number/],
    ["PORT", "70000", /PORT: expected 0 to 65535/],
    ["CONTRACT_ADDRESS", "0x1234", /CONTRACT_ADDRESS: not an Ethereum address/],
    ["RPC_URL", "ftp://x", /RPC_URL: expected a http or https URL/],
    ["MYSQL_URL", "postgres://x", /MYSQL_URL/],
    ["ACCOUNT", "0x0000000000000000000000000000000000000001", /ACCOUNT: does not match/],
    ["LOG_LEVEL", "loud", /LOG_LEVEL/],
    ["INSECURE_HTTP", "maybe", /INSECURE_HTTP/],
    ["TLS_CERT", "/tmp/cert.pem", /TLS_KEY: missing/],
  ] as const) {
    it(`rejects ${name}=${JSON.stringify(value)} naming it`, () => {
      expect(() => parseConfig({ ...base, [name]: value })).to.throw(ConfigError, pattern);
    });
  }

  it("stops main.ts with exit 1 and one line naming a missing or malformed setting", async () => {
    const [missing, malformed] = await Promise.all([
      runRelay([], { ...base, SESSION_SECRET: "", LOG_LEVEL: "info" }),
      runRelay([], { ...base, MAX_FRAME_BYTES: "big" }),
    ]);
    expect(missing.code).to.equal(1);
    expect(missing.stderr.trim().split("\n")).to.deep.equal(["relay: invalid setting SESSION_SECRET: missing (32 random bytes as 64 hex characters, e.g. `openssl rand -hex 32`)"]);
    expect(missing.stdout).to.equal("");
    expect(malformed.code).to.equal(1);
    expect(malformed.stderr.trim().split("\n")).to.have.length(1);
    expect(malformed.stderr).to.include("MAX_FRAME_BYTES");
    expect(malformed.stderr).to.not.include(base.PRIVATE_KEY);
  });
});

describe("relay process (TLS, self-signed certificate)", function () {
  this.timeout(60_000);
  let chain: ChainFixture;
  let dataDir: string;

  before(async () => {
    chain = await startChain();
    dataDir = await mkdtemp(path.join(tmpdir(), "relay-tls-"));
  });
  after(async () => {
    await chain?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("serves HTTPS with a certificate generated on first start and reused after a restart", async () => {
    const options = { rpcUrl: chain.anvil.url, contractAddress: chain.deployed.address, deployBlock: chain.deployed.deployBlock, relayerKey: chain.deployed.relayerKey, dataDir };
    const first = await startRelayProcess(options);
    let firstCert: string | null;
    try {
      expect(first.url).to.match(/^https:\/\/127\.0\.0\.1:\d+$/);
      const info = await first.request("GET", "/v1/info");
      expect(info.status).to.equal(200);
      expect(info.body).to.include({ chainId: "31337", contractAddress: chain.deployed.address, protocolVersion: 1 });
      const user = newTestUser(uniqueUsername("tls"));
      expect((await first.request("POST", "/v1/credential-hash", { username: user.username, credential: user.credential })).status).to.equal(200);
      firstCert = first.certificate;
      expect(first.output()).to.include("MYSQL_URL is not set");
      expect(first.output()).to.not.include(user.credential.slice(2));
    } finally {
      await first.stop();
    }
    const second = await startRelayProcess(options);
    try {
      expect(second.certificate).to.equal(firstCert!);
      expect(second.output()).to.include('"source":"reused"');
    } finally {
      await second.stop();
    }
  });

  it("the in-process fixture agrees with main.ts on the environment it accepts", () => {
    expect(() => parseConfig(testEnv(chain))).to.not.throw();
  });
});
