/**
 * No password oracle, against two real relay processes sharing Redis: guesses against one victim through
 * login and credential-hash, spread over both instances, are counted together and the one past the
 * per-user limit gets 429 on either instance; credential-hash refuses a registered name without its own
 * session and binds the username; a wrong password and a right password with a wrong key answer alike.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { newIdentity } from "../helpers/signing";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { startChain, type ChainFixture } from "../helpers/chain";
import { newTestUser, uniqueUsername, randomCredential } from "../helpers/users";
import { api, login, registerUser } from "./accounts-fixture";
import { REDIS_URL } from "./messaging-helpers";

const PER_USER = 6;

describe("no password oracle (two relay processes sharing Redis)", function () {
  this.timeout(120_000);
  let chain: ChainFixture;
  let relays: RelayProcess[] = [];
  const dirs: string[] = [];

  before(async () => {
    chain = await startChain();
    const shared = {
      CREDENTIAL_PEPPER: randomBytes(32).toString("hex"),
      SESSION_SECRET: randomBytes(32).toString("hex"),
      INSECURE_HTTP: "1",
      RATE_LIMIT_LOGIN_PER_USER: String(PER_USER),
      // Backoff far away, so that the per-user window is what answers 429 here.
      RATE_LIMIT_BACKOFF_FREE_FAILURES: "1000",
    };
    for (let i = 0; i < 2; i++) {
      const dataDir = await mkdtemp(path.join(tmpdir(), "chat-oracle-"));
      dirs.push(dataDir);
      relays.push(
        await startRelayProcess({
          rpcUrl: chain.anvil.url,
          contractAddress: chain.deployed.address,
          deployBlock: chain.deployed.deployBlock,
          relayerKey: chain.deployed.relayerKey,
          redisUrl: REDIS_URL,
          dataDir,
          env: shared,
        }),
      );
    }
  });
  after(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    relays = [];
    await chain?.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it("counts guesses against one victim across routes and instances, then answers 429 on both", async () => {
    const [a, b] = relays;
    const victim = newTestUser(uniqueUsername("victim"));
    // Registration asks the credential hash once: the first attempt of the window.
    expect((await registerUser(a.url, chain.domain, victim)).status).to.equal(200);
    const statuses: number[] = [];
    for (let i = 1; i < PER_USER; i++) {
      const guess = randomCredential();
      const relay = i % 2 ? a : b;
      const r = i % 3 === 0
        ? await api(relay.url, "POST", "/v1/credential-hash", { username: victim.username, credential: guess })
        : await login(relay.url, chain.domain, victim, { credential: guess, signer: newIdentity() });
      statuses.push(r.status);
    }
    expect(statuses).to.not.include(429);
    for (const relay of [a, b]) {
      const over = await login(relay.url, chain.domain, victim, { credential: randomCredential() });
      expect(over.status).to.equal(429);
      expect(over.body.error.code).to.equal("RATE_LIMITED");
      const hash = await api(relay.url, "POST", "/v1/credential-hash", { username: victim.username, credential: randomCredential() });
      expect(hash.status).to.equal(429);
    }
    // The failures moved the metric on the instance that saw them.
    const metrics = await a.request("GET", "/metrics");
    expect(String(metrics.body)).to.match(/chat_relay_failed_logins_total\{reason="wrong_password"\} [1-9]/);
    // Another user is not affected.
    const other = newTestUser(uniqueUsername("bystander"));
    expect((await registerUser(b.url, chain.domain, other)).status).to.equal(200);
    expect((await login(a.url, chain.domain, other)).status).to.equal(200);
  });

  it("gives a registered name's credential hash only to its own session, and binds the username", async () => {
    const [a, b] = relays;
    const alice = newTestUser(uniqueUsername("alice"));
    const mallory = newTestUser(uniqueUsername("mallory"));
    for (const u of [alice, mallory]) expect((await registerUser(a.url, chain.domain, u)).status).to.equal(200);
    const guess = randomCredential();

    const anonymous = await api(b.url, "POST", "/v1/credential-hash", { username: alice.username, credential: guess });
    expect(anonymous.status).to.equal(409);
    expect(anonymous.body.error.code).to.equal("USERNAME_TAKEN");

    const malloryToken = (await login(a.url, chain.domain, mallory)).body.token;
    const foreign = await api(b.url, "POST", "/v1/credential-hash", { username: alice.username, credential: guess }, malloryToken);
    expect(foreign.status).to.equal(409);
    expect(foreign.body).to.deep.equal(anonymous.body);

    // Mallory's own hash of the guess is worthless against alice: the pepper binds the name.
    const own = await api(b.url, "POST", "/v1/credential-hash", { username: mallory.username, credential: alice.credential }, malloryToken);
    expect(own.status).to.equal(200);
    expect(own.body.credentialHash).to.not.equal((await chain.registry.credentialHash(alice.username)).toLowerCase());

    const aliceToken = (await login(a.url, chain.domain, alice)).body.token;
    const mine = await api(b.url, "POST", "/v1/credential-hash", { username: alice.username, credential: alice.credential }, aliceToken);
    expect(mine.status).to.equal(200);
    expect(mine.body.credentialHash).to.equal((await chain.registry.credentialHash(alice.username)).toLowerCase());
  });

  it("answers a wrong password and a right password with a wrong key identically", async () => {
    const [a] = relays;
    const bob = newTestUser(uniqueUsername("bob"));
    expect((await registerUser(a.url, chain.domain, bob)).status).to.equal(200);
    const timings: Record<string, number[]> = { password: [], key: [] };
    let wrongPassword: any;
    let wrongKey: any;
    for (let i = 0; i < 2; i++) {
      let started = performance.now();
      wrongPassword = await login(a.url, chain.domain, bob, { credential: randomCredential() });
      timings.password.push(performance.now() - started);
      started = performance.now();
      wrongKey = await login(a.url, chain.domain, bob, { signer: newIdentity() });
      timings.key.push(performance.now() - started);
    }
    expect(wrongPassword.status).to.equal(401);
    expect(wrongKey.status).to.equal(wrongPassword.status);
    expect(wrongKey.body).to.deep.equal(wrongPassword.body);
    expect(wrongKey.body.error.code).to.equal("LOGIN_FAILED");
    console.log(`      wrong password ${timings.password.map(Math.round).join("/")} ms, wrong key ${timings.key.map(Math.round).join("/")} ms`);
    expect((await login(a.url, chain.domain, bob)).status).to.equal(200);
  });
});
