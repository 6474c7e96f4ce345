/**
 * Accounts through the relay against a real anvil and the real MariaDB: registration lands on chain and
 * then in `users`; fifty concurrent registrations; login with right and wrong password and key; key
 * history after rotate and a time-locked reset (pending, cancelled, completed by the relay); contract errors as stable 4xx codes; rate limits; chain down -> 503.
 */
import http from "node:http";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { ZeroAddress } from "ethers";
import { newIdentity, signCancelReset, signRegister } from "../helpers/signing";
import type { TestDatabase } from "../helpers/mysql";
import { waitFor } from "../helpers/wait";
import { startChain, type ChainFixture } from "../helpers/chain";
import { newTestUser, uniqueUsername, randomCredential } from "../helpers/users";
import {
  api,
  changeCredential,
  deadline,
  login,
  registerUser,
  resetUser,
  rotateUser,
  startRelay,
  withDatabase,
  type RelayFixture,
} from "./accounts-fixture";
import { verifySessionToken } from "../../relay/sessions";

describe("relay accounts (anvil + MariaDB)", function () {
  this.timeout(60_000);
  let chain: ChainFixture;
  let db: TestDatabase;
  let relay: RelayFixture;

  before(async () => {
    chain = await startChain();
    db = await withDatabase();
    relay = await startRelay({ chain, db, env: { RATE_LIMIT_REGISTER_PER_ADDRESS: "1000", RATE_LIMIT_LOGIN_PER_ADDRESS: "1000" } });
  });
  after(async () => {
    await relay?.close();
    await db?.drop();
    await chain?.close();
  });

  it("registers through the relay: on chain first, then in the users table", async () => {
    const user = newTestUser(uniqueUsername("alice"));
    const response = await registerUser(relay.url, chain.domain, user);
    expect(response.status, JSON.stringify(response.body)).to.equal(200);
    expect(response.body.transactionHash).to.match(/^0x[0-9a-f]{64}$/);
    const receipt = await chain.provider.getTransactionReceipt(response.body.transactionHash);
    expect(receipt!.blockNumber).to.equal(response.body.blockNumber);
    expect(await chain.registry.isRegistered(user.username)).to.equal(true);

    const [rows] = await relay.pool!.query<any[]>("SELECT * FROM users WHERE username = ?", [user.username]);
    expect(rows).to.have.length(1);
    expect(rows[0].password).to.equal((await chain.registry.credentialHash(user.username)).toLowerCase());
    expect(rows[0].password).to.not.equal(user.credential);
    expect(rows[0].pub_key).to.equal(user.identity.publicKey);
    const block = await chain.provider.getBlock(response.body.blockNumber);
    expect(new Date(rows[0].update_time).getTime() / 1000).to.equal(block!.timestamp);

    const again = await registerUser(relay.url, chain.domain, user);
    expect(again.status).to.equal(409);
    expect(again.body.error.code).to.equal("USERNAME_TAKEN");
  });

  it("lands fifty concurrent registrations, one relayer nonce each", async () => {
    const users = Array.from({ length: 50 }, () => newTestUser(uniqueUsername("many")));
    const startNonce = await chain.provider.getTransactionCount(relay.chain.relayerAddress);
    const started = Date.now();
    const responses = await Promise.all(users.map((u) => registerUser(relay.url, chain.domain, u)));
    const ms = Date.now() - started;
    for (const r of responses) expect(r.status, JSON.stringify(r.body)).to.equal(200);
    expect(new Set(responses.map((r) => r.body.transactionHash)).size).to.equal(50);
    expect(await chain.provider.getTransactionCount(relay.chain.relayerAddress)).to.equal(startNonce + 50);
    const [rows] = await relay.pool!.query<any[]>("SELECT COUNT(*) AS n FROM users WHERE username LIKE 'many\\_%'");
    expect(Number(rows[0].n)).to.equal(50);
    console.log(`      50 concurrent registrations: ${ms} ms`);
  });

  it("logs in with the right password and current key, and refuses a wrong password, a wrong key, an unknown user", async () => {
    const user = newTestUser(uniqueUsername("bob"));
    expect((await registerUser(relay.url, chain.domain, user)).status).to.equal(200);

    const ok = await login(relay.url, chain.domain, user);
    expect(ok.status, JSON.stringify(ok.body)).to.equal(200);
    const claims = verifySessionToken({ secret: relay.config.sessionSecret, token: ok.body.token, now: Date.now() });
    expect(claims.sub).to.equal(user.username);
    expect(ok.body.keyIndex).to.equal(0);

    const wrongPassword = await login(relay.url, chain.domain, user, { credential: randomCredential() });
    expect(wrongPassword.status).to.equal(401);
    expect(wrongPassword.body.error.code).to.equal("LOGIN_FAILED");

    const wrongKey = await login(relay.url, chain.domain, user, { signer: newIdentity() });
    expect(wrongKey.status).to.equal(401);
    expect(wrongKey.body).to.deep.equal(wrongPassword.body);

    const unknown = await login(relay.url, chain.domain, newTestUser(uniqueUsername("ghost")));
    expect(unknown.status).to.equal(404);
    expect(unknown.body.error.code).to.equal("UNKNOWN_USER");

    const metrics = await fetch(`${relay.url}/metrics`).then((r) => r.text());
    expect(metrics).to.match(/chat_relay_failed_logins_total\{reason="wrong_password"\} [1-9]/);
  });

  it("uses each login challenge once", async () => {
    const user = newTestUser(uniqueUsername("carol"));
    await registerUser(relay.url, chain.domain, user);
    const challenge = await api(relay.url, "POST", "/v1/login/challenge", { username: user.username });
    const { Wallet } = await import("ethers");
    const { loginMessage } = await import("../../protocol/wire");
    const signature = await new Wallet(user.identity.privateKey).signMessage(
      loginMessage({ username: user.username, challenge: challenge.body.challenge, chainId: chain.domain.chainId.toString(), contractAddress: chain.deployed.address }),
    );
    const body = { username: user.username, credential: user.credential, challenge: challenge.body.challenge, signature };
    expect((await api(relay.url, "POST", "/v1/login", body)).status).to.equal(200);
    const replay = await api(relay.url, "POST", "/v1/login", body);
    expect(replay.status).to.equal(401);
    expect(replay.body.error.code).to.equal("CHALLENGE_INVALID");
  });

  it("serves the key history with kinds after rotate and a time-locked reset, and logs in only with the current key", async () => {
    const user = newTestUser(uniqueUsername("dave"));
    await registerUser(relay.url, chain.domain, user);
    const second = newIdentity();
    const rotated = await rotateUser(relay.url, chain, user, second);
    expect(rotated.status, JSON.stringify(rotated.body)).to.equal(200);
    const third = newIdentity();
    const wrongReset = await resetUser(relay.url, chain, { ...user, identity: second }, third, randomCredential());
    expect(wrongReset.status).to.equal(401);
    expect(wrongReset.body.error.code).to.equal("WRONG_PASSWORD");
    const reset = await resetUser(relay.url, chain, { ...user, identity: second }, third);
    expect(reset.status, JSON.stringify(reset.body)).to.equal(200);

    // Only requested: the relay answers when it takes effect, and shows it pending with the keys.
    const [pendingKey, effectiveAt] = await chain.registry.pendingReset(user.username);
    expect(pendingKey).to.equal(third.address);
    expect(reset.body.effectiveAt).to.equal(Number(effectiveAt));
    const block = await chain.provider.getBlock(reset.body.blockNumber);
    expect(reset.body.effectiveAt).to.equal(block!.timestamp + 60);
    const pending = await api(relay.url, "GET", `/v1/users/${user.username}/keys`);
    expect(pending.body.keys).to.have.length(2);
    expect(pending.body.pendingReset).to.deep.include({ publicKey: third.publicKey, address: third.address, effectiveAt: reset.body.effectiveAt });
    expect(pending.body.pendingReset.transactionHash).to.equal(reset.body.transactionHash);
    expect((await login(relay.url, chain.domain, { ...user, identity: third })).body.error.code).to.equal("LOGIN_FAILED");
    const again = await resetUser(relay.url, chain, { ...user, identity: second }, newIdentity());
    expect(again.body.error.code).to.equal("RESET_PENDING");

    // Past the delay on the chain's clock, the relay completes it itself.
    await chain.provider.send("evm_increaseTime", [61]);
    await chain.provider.send("evm_mine", []);
    await waitFor("the relay to complete the reset", async () => (await chain.registry.keyCount(user.username)) >= 3n, 15_000);
    expect(await chain.registry.keyCount(user.username)).to.equal(3n);
    await relay.relay.syncer.syncOnce();

    const keys = await api(relay.url, "GET", `/v1/users/${user.username}/keys`);
    expect(keys.status).to.equal(200);
    expect(keys.body.source).to.equal("cache");
    expect(keys.body.verified).to.equal(true);
    expect(keys.body.pendingReset).to.equal(null);
    expect(keys.body.keys.map((k: any) => [k.index, k.kind, k.publicKey])).to.deep.equal([
      [0, "registered", user.identity.publicKey],
      [1, "rotated", second.publicKey],
      [2, "reset", third.publicKey],
    ]);
    const [rows] = await relay.pool!.query<any[]>("SELECT kind FROM key_history WHERE username = ? ORDER BY idx", [user.username]);
    expect(rows.map((r) => r.kind)).to.deep.equal(["registered", "rotated", "reset"]);
    const [pendingRows] = await relay.pool!.query<any[]>("SELECT * FROM pending_resets WHERE username = ?", [user.username]);
    expect(pendingRows).to.have.length(0);

    expect((await login(relay.url, chain.domain, { ...user, identity: second })).body.error.code).to.equal("LOGIN_FAILED");
    const current = await login(relay.url, chain.domain, { ...user, identity: third });
    expect(current.status).to.equal(200);
    expect(current.body.keyIndex).to.equal(2);

    const unchanged = await rotateUser(relay.url, chain, { ...user, identity: third }, third);
    expect(unchanged.status).to.equal(409);
    expect(unchanged.body.error.code).to.equal("KEY_UNCHANGED");
  });

  it("relays a cancel signed by the current key, refuses one signed by the pending key, and the reset never completes", async () => {
    const user = newTestUser(uniqueUsername("erin"));
    await registerUser(relay.url, chain.domain, user);
    const thief = newIdentity();
    const requested = await resetUser(relay.url, chain, user, thief);
    expect(requested.status, JSON.stringify(requested.body)).to.equal(200);
    const [rows] = await relay.pool!.query<any[]>("SELECT address, effective_at FROM pending_resets WHERE username = ?", [user.username]);
    expect(rows).to.deep.equal([{ address: thief.address, effective_at: requested.body.effectiveAt }]);

    const cancel = async (signer: typeof thief) => {
      const nonce = await chain.registry.nonces(user.username);
      const d = deadline();
      const signature = signCancelReset({ domain: chain.domain, signer, username: user.username, nonce, deadline: BigInt(d) });
      return api(relay.url, "POST", "/v1/reset/cancel", { username: user.username, deadline: d, signature });
    };
    const forged = await cancel(thief);
    expect(forged.status).to.equal(400);
    expect(forged.body.error.code).to.equal("INVALID_SIGNATURE");
    const cancelled = await cancel(user.identity);
    expect(cancelled.status, JSON.stringify(cancelled.body)).to.equal(200);
    expect((await chain.registry.pendingReset(user.username))[0]).to.equal(ZeroAddress);
    expect((await api(relay.url, "GET", `/v1/users/${user.username}/keys`)).body.pendingReset).to.equal(null);
    const nothing = await cancel(user.identity);
    expect(nothing.body.error.code).to.equal("NO_PENDING_RESET");

    await chain.provider.send("evm_increaseTime", [61]);
    await chain.provider.send("evm_mine", []);
    await relay.relay.syncer.syncOnce();
    await relay.relay.syncer.resetsCompleted();
    expect(await chain.registry.keyCount(user.username)).to.equal(1n);
    expect((await chain.registry.currentKey(user.username))[0]).to.equal(user.identity.address);
  });

  it("changes the credential on chain; the old password stops working", async () => {
    const user = newTestUser(uniqueUsername("erin"));
    await registerUser(relay.url, chain.domain, user);
    const next = randomCredential();
    const session = await login(relay.url, chain.domain, user);
    const changed = await changeCredential(relay.url, chain, user, next, session.body.token);
    expect(changed.status, JSON.stringify(changed.body)).to.equal(200);
    expect((await login(relay.url, chain.domain, user)).body.error.code).to.equal("LOGIN_FAILED");
    expect((await login(relay.url, chain.domain, { ...user, credential: next })).status).to.equal(200);
  });

  it("maps contract errors and bad input to stable 4xx codes without spending gas", async () => {
    const user = newTestUser(uniqueUsername("frank"));
    const nonceBefore = await chain.provider.getTransactionCount(relay.chain.relayerAddress);
    // A registration signed by another key than the one registered.
    const hash = await api(relay.url, "POST", "/v1/credential-hash", { username: user.username, credential: user.credential });
    const d = Math.floor(Date.now() / 1000) + 600;
    const forged = await api(relay.url, "POST", "/v1/register", {
      username: user.username,
      credential: user.credential,
      publicKey: user.identity.publicKey,
      deadline: d,
      signature: signRegister({ domain: chain.domain, signer: newIdentity(), publicKey: user.identity.publicKey, username: user.username, credentialHash: hash.body.credentialHash, deadline: BigInt(d) }),
    });
    expect(forged.status).to.equal(400);
    expect(forged.body.error.code).to.equal("INVALID_SIGNATURE");

    const expired = await api(relay.url, "POST", "/v1/register", { username: user.username, credential: user.credential, publicKey: user.identity.publicKey, deadline: 1000, signature: ["0x" + "11".repeat(32), "0x" + "22".repeat(32)] });
    expect(expired.body.error.code).to.equal("SIGNATURE_EXPIRED");

    const badField = await api(relay.url, "POST", "/v1/register", { username: user.username, credential: "0x1234" });
    expect(badField.status).to.equal(400);
    expect(badField.body.error.code).to.equal("BAD_REQUEST");
    expect(badField.body.error.message).to.match(/^credential/);

    const unknownRotate = await rotateUser(relay.url, chain, newTestUser(uniqueUsername("nobody")), newIdentity());
    expect(unknownRotate.status).to.equal(404);
    expect(unknownRotate.body.error.code).to.equal("UNKNOWN_USER");

    const notJson = await fetch(`${relay.url}/v1/login`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
    expect(notJson.status).to.equal(400);
    expect(((await notJson.json()) as any).error.code).to.equal("BAD_REQUEST");

    expect(await chain.provider.getTransactionCount(relay.chain.relayerAddress)).to.equal(nonceBefore);
  });

  it("answers a cache miss from the chain", async () => {
    const user = newTestUser(uniqueUsername("gina"));
    await registerUser(relay.url, chain.domain, user);
    await relay.pool!.query("DELETE FROM key_history WHERE username = ?", [user.username]);
    const keys = await api(relay.url, "GET", `/v1/users/${user.username}/keys`);
    expect(keys.status).to.equal(200);
    expect(keys.body.source).to.equal("chain");
    expect(keys.body.keys).to.have.length(1);
    expect(keys.body.keys[0]).to.include({ index: 0, kind: "registered", publicKey: user.identity.publicKey });
    expect((await api(relay.url, "GET", "/v1/users/nobody_here/keys")).body.error.code).to.equal("UNKNOWN_USER");
    expect((await api(relay.url, "GET", "/v1/users/Bad-Name/keys")).body.error.code).to.equal("BAD_REQUEST");
  });
});

describe("relay accounts limits and failures", function () {
  this.timeout(60_000);
  let chain: ChainFixture;
  let relay: RelayFixture;
  const user = newTestUser(uniqueUsername("hank"));

  before(async () => {
    chain = await startChain();
    relay = await startRelay({ chain, env: { RATE_LIMIT_LOGIN_PER_USER: "3", RATE_LIMIT_WINDOW_SECONDS: "60" } });
    expect((await registerUser(relay.url, chain.domain, user)).status).to.equal(200);
  });
  after(async () => {
    await relay?.close();
    await chain?.close();
  });

  it("answers 429 with a retry time after too many login attempts for one username", async () => {
    const statuses: number[] = [];
    let limited: any = null;
    for (let i = 0; i < 5; i++) {
      const r = await api(relay.url, "POST", "/v1/login", { username: user.username, credential: user.credential, challenge: "0x" + "00".repeat(32), signature: "0x" + "00".repeat(65) });
      statuses.push(r.status);
      if (r.status === 429) limited = r;
    }
    // Registration's credential-hash request was the first password attempt against this user.
    expect(statuses.slice(0, 2)).to.not.include(429);
    expect(statuses.slice(2)).to.deep.equal([429, 429, 429]);
    expect(limited.body.error.code).to.equal("RATE_LIMITED");
    expect(limited.body.error.retryAfterSeconds).to.be.within(1, 60);
    expect(limited.headers.get("retry-after")).to.equal(String(limited.body.error.retryAfterSeconds));
    // Another username is not affected.
    const other = await api(relay.url, "POST", "/v1/credential-hash", { username: "other_user", credential: user.credential });
    expect(other.status).to.equal(200);
  });

  it("answers 503 CHAIN_UNAVAILABLE when the chain is down, and /healthz says degraded", async () => {
    await chain.anvil.stop();
    const response = await registerUser(relay.url, chain.domain, newTestUser(uniqueUsername("ivy")));
    expect(response.status).to.equal(503);
    expect(response.body.error.code).to.equal("CHAIN_UNAVAILABLE");
    // Within a few polls the health check notices.
    const health = await waitFor("a degraded health check", async () => {
      const answer = await api(relay.url, "GET", "/healthz");
      return answer.status === 503 && answer;
    }, 10_000);
    expect(health.body.status).to.equal("degraded");
    expect(health.body.chain.ok).to.equal(false);
    // Keys still come from the cache, marked unverified.
    const keys = await api(relay.url, "GET", `/v1/users/${user.username}/keys`);
    expect(keys.status).to.equal(200);
    expect(keys.body).to.include({ source: "cache", verified: false });
  });
});

describe("relay accounts: a failed broadcast leaves no nonce gap", function () {
  this.timeout(60_000);
  let chain: ChainFixture;
  let relay: RelayFixture;
  let proxy: http.Server;
  /** "drop": the transaction never reaches the node; "lose": it does, but the answer is lost. */
  let failNext: "drop" | "lose" | null = null;

  before(async () => {
    chain = await startChain();
    // A real JSON-RPC proxy in front of anvil that fails one eth_sendRawTransaction on demand.
    proxy = http.createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks).toString("utf8");
      const mode = body.includes("eth_sendRawTransaction") ? failNext : null;
      if (mode) failNext = null;
      if (mode === "drop") return res.writeHead(502).end("bad gateway");
      const upstream = await fetch(chain.anvil.url, { method: "POST", headers: { "content-type": "application/json" }, body });
      const text = await upstream.text();
      if (mode === "lose") return res.writeHead(502).end("bad gateway");
      res.writeHead(upstream.status, { "content-type": "application/json" }).end(text);
    });
    proxy.listen(0, "127.0.0.1");
    await once(proxy, "listening");
    const port = (proxy.address() as AddressInfo).port;
    relay = await startRelay({ chain, env: { RPC_URL: `http://127.0.0.1:${port}` } });
  });
  after(async () => {
    await relay?.close();
    proxy?.closeAllConnections();
    await new Promise((r) => proxy?.close(r));
    await chain?.close();
  });

  for (const mode of ["drop", "lose"] as const) {
    it(`recovers after a broadcast that ${mode === "drop" ? "never reached the node" : "reached the node but lost its answer"}`, async () => {
      const relayer = relay.chain.relayerAddress;
      const before = await chain.provider.getTransactionCount(relayer);
      failNext = mode;
      const failed = await registerUser(relay.url, chain.domain, newTestUser(uniqueUsername("fail")));
      expect(failed.status).to.equal(503);
      expect(failed.body.error.code).to.equal("CHAIN_UNAVAILABLE");
      const next = await Promise.all([newTestUser(uniqueUsername("after")), newTestUser(uniqueUsername("after"))].map((u) => registerUser(relay.url, chain.domain, u)));
      for (const r of next) expect(r.status, JSON.stringify(r.body)).to.equal(200);
      // Every nonce used exactly once, in order: the lost transaction (if it landed) plus the two new ones.
      expect(await chain.provider.getTransactionCount(relayer)).to.equal(before + (mode === "lose" ? 3 : 2));
      expect(await chain.provider.getTransactionCount(relayer, "pending")).to.equal(before + (mode === "lose" ? 3 : 2));
    });
  }
});
