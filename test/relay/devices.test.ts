/**
 * Several devices per user, against real relays: two relay processes sharing MariaDB and Redis (a link
 * request made on one is approved on the other; a revocation on one ends the device's session on both and
 * closes its socket on the other), and in-process relays (memory stores) for the link lifetime and the
 * device limit. Credentials are built as the client builds them (protocol/mls/authorize-device.ts) and
 * signed by the user's identity key; the device signs its login with its own Ed25519 key.
 */
import { generateKeyPairSync, randomBytes, sign as ed25519Sign, type KeyObject } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { Wallet } from "ethers";
import { authorizeDevice } from "../../protocol/mls/authorize-device";
import { deviceFingerprint, deviceLoginText } from "../../protocol/wire-devices";
import { encodeBase64 } from "../../protocol/wire-v2";
import { createSessionRevocations, type SessionRevocations } from "../../relay/storage/revocations";
import { startChain, type ChainFixture } from "../helpers/chain";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { newIdentity, type Identity } from "../helpers/signing";
import { newTestUser, uniqueUsername, type TestUser } from "../helpers/users";
import { waitFor } from "../helpers/wait";
import { login, registerUser, resetUser, rotateUser, startRelay, type RelayFixture } from "./accounts-fixture";
import { connectClient, createTestPool, isType, REDIS_URL } from "./messaging-helpers";

interface TestDevice {
  publicKey: Uint8Array;
  privateKey: KeyObject;
}

function newDevice(): TestDevice {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  return { publicKey: new Uint8Array(Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url")), privateKey };
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

async function call(
  url: string,
  method: string,
  pathname: string,
  options: { body?: unknown; token?: string; deviceId?: string } = {},
): Promise<{ status: number; body: any }> {
  const response = await fetch(`${url}${pathname}`, {
    method,
    headers: {
      ...(options.body === undefined ? {} : { "content-type": "application/json" }),
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
      ...(options.deviceId ? { "x-device-id": options.deviceId } : {}),
    },
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : undefined };
}

/** The claims of a session token (its payload is base64url JSON; the MAC is the relay's business). */
const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split(".")[0], "base64url").toString("utf8"));

describe("several devices per user (relay)", function () {
  this.timeout(180_000);
  let chain: ChainFixture;
  let db: TestDatabase;
  let relays: RelayProcess[] = [];
  const dirs: string[] = [];

  before(async () => {
    chain = await startChain();
    db = await createTestDatabase("chat_devices");
    const shared = { CREDENTIAL_PEPPER: randomBytes(32).toString("hex"), SESSION_SECRET: randomBytes(32).toString("hex"), INSECURE_HTTP: "1" };
    for (let i = 0; i < 2; i++) {
      const dataDir = await mkdtemp(path.join(tmpdir(), "chat-devices-"));
      dirs.push(dataDir);
      relays.push(
        await startRelayProcess({
          rpcUrl: chain.anvil.url,
          contractAddress: chain.deployed.address,
          deployBlock: chain.deployed.deployBlock,
          relayerKey: chain.deployed.relayerKey,
          mysqlUrl: db.url,
          redisUrl: REDIS_URL,
          dataDir,
          env: shared,
          startTimeoutMs: 60_000,
        }),
      );
    }
  });
  after(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    relays = [];
    await chain?.close();
    await db?.drop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  const urlOf = (i: number) => relays[i].url;

  /** The credential a device holding `identity` (key `keyIndex` of `username`) signs for `device`. */
  async function credentialFor(username: string, identity: Identity, keyIndex: number, device: TestDevice): Promise<string> {
    const credential = await authorizeDevice({
      username,
      keyIndex,
      chainId: chain.deployed.chainId,
      contract: chain.deployed.address,
      devicePublicKey: device.publicKey,
      sign: (text) => new Wallet(identity.privateKey).signMessage(text),
    });
    return encodeBase64(credential.identity);
  }

  async function registered(prefix: string): Promise<{ user: TestUser; token: string }> {
    const user = newTestUser(uniqueUsername(prefix));
    const done = await registerUser(urlOf(0), chain.domain, user);
    expect(done.status, JSON.stringify(done.body)).to.equal(200);
    const session = await login(urlOf(0), chain.domain, user);
    expect(session.status, JSON.stringify(session.body)).to.equal(200);
    return { user, token: session.body.token };
  }

  async function requestLink(url: string, username: string, device: TestDevice, deviceName?: string) {
    const created = await call(url, "POST", "/v2/device-links", { body: { username, devicePublicKey: hex(device.publicKey), deviceName } });
    expect(created.status, JSON.stringify(created.body)).to.equal(200);
    return created.body as { code: string; linkSecret: string; expiresAt: number };
  }

  async function deviceLogin(url: string, username: string, deviceId: string, device: TestDevice, credential: string) {
    const challenge = await call(url, "POST", "/v1/login/challenge", { body: { username } });
    expect(challenge.status).to.equal(200);
    const text = deviceLoginText({ username, challenge: challenge.body.challenge, chainId: chain.deployed.chainId, contract: chain.deployed.address, deviceId });
    const signature = hex(ed25519Sign(null, Buffer.from(text, "utf8"), device.privateKey));
    return call(url, "POST", "/v1/login/device", { body: { username, deviceId, credential, challenge: challenge.body.challenge, signature } });
  }

  /** Links `device` for `user` (request on B, approval on A) and logs it in on B; returns its id and token. */
  async function linked(user: TestUser, token: string, device: TestDevice, keyIndex = 0, identity = user.identity) {
    const link = await requestLink(urlOf(1), user.username, device, "laptop");
    const approved = await call(urlOf(0), "POST", `/v2/device-links/${link.code}/approve`, {
      token,
      body: { credential: await credentialFor(user.username, identity, keyIndex, device) },
    });
    expect(approved.status, JSON.stringify(approved.body)).to.equal(200);
    const status = await call(urlOf(1), "GET", `/v2/device-links/status?secret=${link.linkSecret}`);
    expect(status.body.status).to.equal("approved");
    const session = await deviceLogin(urlOf(1), user.username, status.body.deviceId, device, status.body.credential);
    expect(session.status, JSON.stringify(session.body)).to.equal(200);
    return { deviceId: status.body.deviceId as string, credential: status.body.credential as string, token: session.body.token as string };
  }

  it("links a device (request on one instance, approval on the other), which logs in with its own key and a session bound to it", async () => {
    const { user, token } = await registered("link");
    expect(claimsOf(token).dev, "an identity-key login is bound to no device").to.equal(undefined);
    const device = newDevice();
    const link = await requestLink(urlOf(1), user.username, device, "laptop");
    expect(link.code).to.match(/^[0-9A-HJKMNP-TV-Z]{8}$/);
    expect(link.linkSecret).to.match(/^[0-9a-f]{64}$/);
    expect((await call(urlOf(1), "GET", `/v2/device-links/status?secret=${link.linkSecret}`)).body).to.deep.equal({ status: "pending", expiresAt: link.expiresAt });

    // The approver types the code as a person would (lower case, a dash) and compares the fingerprint.
    const typed = `${link.code.slice(0, 4).toLowerCase()}-${link.code.slice(4)}`;
    const shown = await call(urlOf(0), "GET", `/v2/device-links/${typed}`, { token });
    expect(shown.status, JSON.stringify(shown.body)).to.equal(200);
    expect(shown.body).to.include({ code: link.code, username: user.username, devicePublicKey: hex(device.publicKey), deviceName: "laptop" });
    expect(shown.body.fingerprint).to.equal(deviceFingerprint(device.publicKey));

    const credential = await credentialFor(user.username, user.identity, 0, device);
    const approved = await call(urlOf(0), "POST", `/v2/device-links/${typed}/approve`, { token, body: { credential } });
    expect(approved.status, JSON.stringify(approved.body)).to.equal(200);
    expect(approved.body).to.include({ name: "laptop", keyIndex: 0, devicePublicKey: hex(device.publicKey), revokedAt: null });
    const again = await call(urlOf(0), "POST", `/v2/device-links/${link.code}/approve`, { token, body: { credential } });
    expect(again.status, "an approved request is not waiting any more").to.equal(404);

    const status = await call(urlOf(1), "GET", `/v2/device-links/status?secret=${link.linkSecret}`);
    expect(status.body).to.deep.equal({ status: "approved", deviceId: approved.body.deviceId, keyIndex: 0, credential });

    const session = await deviceLogin(urlOf(1), user.username, approved.body.deviceId, device, credential);
    expect(session.status, JSON.stringify(session.body)).to.equal(200);
    expect(session.body).to.include({ keyIndex: 0, deviceId: approved.body.deviceId, credential });
    expect(claimsOf(session.body.token)).to.include({ sub: user.username, keyIndex: 0, dev: approved.body.deviceId });

    // The device's session works on both instances, on the device routes and the Delivery Service, as itself only.
    for (const url of [urlOf(0), urlOf(1)]) {
      const own = await call(url, "GET", "/v2/devices/self/credential", { token: session.body.token });
      expect(own.body).to.deep.equal({ deviceId: approved.body.deviceId, keyIndex: 0, credential });
      const count = await call(url, "GET", "/v2/key-packages/count", { token: session.body.token, deviceId: approved.body.deviceId });
      expect(count.status, JSON.stringify(count.body)).to.equal(200);
      const other = await call(url, "GET", "/v2/key-packages/count", { token: session.body.token, deviceId: "someone-else" });
      expect(other.status).to.equal(403);
      expect(other.body.error.code).to.equal("FORBIDDEN");
    }

    // The login text is bound to the device id: a signature for another id does not log in as this one.
    const challenge = await call(urlOf(0), "POST", "/v1/login/challenge", { body: { username: user.username } });
    const wrongText = deviceLoginText({ username: user.username, challenge: challenge.body.challenge, chainId: chain.deployed.chainId, contract: chain.deployed.address, deviceId: "other" });
    const forged = await call(urlOf(0), "POST", "/v1/login/device", {
      body: { username: user.username, deviceId: approved.body.deviceId, credential, challenge: challenge.body.challenge, signature: hex(ed25519Sign(null, Buffer.from(wrongText), device.privateKey)) },
    });
    expect(forged.status).to.equal(401);
    expect(forged.body.error.code).to.equal("LOGIN_FAILED");

    // The list shows the device with its fingerprint, linked and last-seen times.
    const list = await call(urlOf(0), "GET", "/v2/devices", { token });
    expect(list.status).to.equal(200);
    expect(list.body.maxDevices).to.equal(10);
    expect(list.body.devices).to.have.length(1);
    const [listed] = list.body.devices;
    expect(listed).to.include({ deviceId: approved.body.deviceId, name: "laptop", fingerprint: deviceFingerprint(device.publicKey), keyIndex: 0, revokedAt: null });
    expect(listed.linkedAt).to.be.within(link.expiresAt - 600_000, Date.now());
    expect(listed.lastSeenAt).to.be.at.least(listed.linkedAt);
  });

  it("refuses a wrong code, another user's session, and a credential for another device or user", async () => {
    const { user, token } = await registered("guard");
    const { user: other, token: otherToken } = await registered("other");
    const device = newDevice();
    const link = await requestLink(urlOf(1), user.username, device);

    const wrong = await call(urlOf(0), "GET", "/v2/device-links/ZZZZZZZZ", { token });
    expect(wrong.status).to.equal(404);
    expect(wrong.body.error.code).to.equal("NOT_FOUND");
    expect((await call(urlOf(0), "GET", "/v2/device-links/not-a-code", { token })).status).to.equal(404);
    expect((await call(urlOf(0), "GET", `/v2/device-links/${link.code}`)).status, "no session").to.equal(401);

    // Another user's session neither sees nor approves it, even with a credential of its own.
    expect((await call(urlOf(0), "GET", `/v2/device-links/${link.code}`, { token: otherToken })).status).to.equal(404);
    const foreign = await call(urlOf(0), "POST", `/v2/device-links/${link.code}/approve`, {
      token: otherToken,
      body: { credential: await credentialFor(other.username, other.identity, 0, device) },
    });
    expect(foreign.status).to.equal(404);

    // A credential for another device key, or signed by another user's key, does not approve this one.
    const forOtherKey = await call(urlOf(0), "POST", `/v2/device-links/${link.code}/approve`, {
      token,
      body: { credential: await credentialFor(user.username, user.identity, 0, newDevice()) },
    });
    expect(forOtherKey.status).to.equal(409);
    expect(forOtherKey.body.error.code).to.equal("KEY_MISMATCH");
    const byOtherKey = await call(urlOf(0), "POST", `/v2/device-links/${link.code}/approve`, {
      token,
      body: { credential: await credentialFor(user.username, other.identity, 0, device) },
    });
    expect(byOtherKey.body.error.code).to.equal("KEY_MISMATCH");
    const otherName = await call(urlOf(0), "POST", `/v2/device-links/${link.code}/approve`, {
      token,
      body: { credential: await credentialFor(other.username, other.identity, 0, device) },
    });
    expect(otherName.status).to.equal(400);
    expect((await call(urlOf(1), "GET", `/v2/device-links/status?secret=${link.linkSecret}`)).body.status).to.equal("pending");
    expect((await call(urlOf(1), "GET", `/v2/device-links/status?secret=${"0".repeat(64)}`)).body).to.deep.equal({ status: "expired" });

    // A device login for a device that does not exist fails.
    const unknown = await deviceLogin(urlOf(0), user.username, "no-such-device", device, await credentialFor(user.username, user.identity, 0, device));
    expect(unknown.status).to.equal(401);
    expect(unknown.body.error.code).to.equal("LOGIN_FAILED");
  });

  it("after a rotation, a kept device logs in with its old credential and receives the re-authorised one", async () => {
    const { user, token } = await registered("rot");
    const device = newDevice();
    const kept = await linked(user, token, device);
    const next = newIdentity();
    expect((await rotateUser(urlOf(0), chain, user, next)).status).to.equal(200);
    const approver = await waitFor("a login with the new key", async () => {
      const session = await login(urlOf(0), chain.domain, { ...user, identity: next });
      return session.status === 200 ? session.body.token : null;
    });

    const renewed = await credentialFor(user.username, next, 1, device);
    const forOtherKey = await call(urlOf(0), "POST", `/v2/devices/${kept.deviceId}/credential`, {
      token: approver,
      body: { credential: await credentialFor(user.username, next, 1, newDevice()) },
    });
    expect(forOtherKey.status, "a credential for another device key").to.equal(409);
    const uploaded = await call(urlOf(0), "POST", `/v2/devices/${kept.deviceId}/credential`, { token: approver, body: { credential: renewed } });
    expect(uploaded.status, JSON.stringify(uploaded.body)).to.equal(200);
    expect(uploaded.body).to.deep.equal({ deviceId: kept.deviceId, keyIndex: 1, credential: renewed });
    const older = await call(urlOf(0), "POST", `/v2/devices/${kept.deviceId}/credential`, { token: approver, body: { credential: kept.credential } });
    expect(older.status, "the old key's credential is older than the one on file").to.equal(400);

    const session = await deviceLogin(urlOf(1), user.username, kept.deviceId, device, kept.credential);
    expect(session.status, JSON.stringify(session.body)).to.equal(200);
    expect(session.body).to.include({ keyIndex: 1, credential: renewed });
    const own = await call(urlOf(0), "GET", "/v2/devices/self/credential", { token: session.body.token });
    expect(own.body).to.deep.equal({ deviceId: kept.deviceId, keyIndex: 1, credential: renewed });
  });

  it("revoking a device ends its session at once on both instances and closes its socket on the other one", async () => {
    const { user, token } = await registered("rev");
    const keptDevice = newDevice();
    const kept = await linked(user, token, keptDevice);
    const device = newDevice();
    const revoked = await linked(user, token, device);
    const socket = await connectClient(`ws://127.0.0.1:${relays[1].port}/v1/ws`, revoked.token);
    await socket.next(isType("ready"), 15_000);
    // Both devices have key packages on the relay; the one about to be revoked has more.
    const keyPackage = () => ({ bytes: encodeBase64(new Uint8Array(randomBytes(64))), notAfter: Date.now() + 24 * 3600 * 1000 });
    const uploads = [
      await call(urlOf(0), "POST", "/v2/key-packages", { token: revoked.token, deviceId: revoked.deviceId, body: { oneTime: [keyPackage(), keyPackage()], lastResort: keyPackage() } }),
      await call(urlOf(0), "POST", "/v2/key-packages", { token: kept.token, deviceId: kept.deviceId, body: { oneTime: [], lastResort: keyPackage() } }),
    ];
    expect(uploads.map((u) => u.status)).to.deep.equal([200, 200]);

    const fromDevice = await call(urlOf(0), "POST", `/v2/devices/${kept.deviceId}/revoke`, { token: revoked.token });
    expect(fromDevice.status, "a device login cannot revoke devices").to.equal(403);

    const done = await call(urlOf(0), "POST", `/v2/devices/${revoked.deviceId}/revoke`, { token });
    expect(done.status, JSON.stringify(done.body)).to.equal(200);
    expect(done.body.deviceId).to.equal(revoked.deviceId);

    const closed = await Promise.race([socket.closed, new Promise<null>((r) => setTimeout(() => r(null), 20_000))]);
    expect(closed, "the revoked device's socket on the other instance was not closed").to.not.equal(null);
    expect(closed!.code).to.equal(4001);
    for (const url of [urlOf(0), urlOf(1)]) {
      const refused = await call(url, "GET", "/v2/key-packages/count", { token: revoked.token, deviceId: revoked.deviceId });
      expect(refused.status).to.equal(401);
      expect(refused.body.error.code).to.equal("SESSION_REVOKED");
      expect((await call(url, "GET", "/v2/devices", { token: revoked.token })).body.error.code).to.equal("SESSION_REVOKED");
      // The kept device and the identity-key session stand.
      expect((await call(url, "GET", "/v2/devices", { token: kept.token })).status).to.equal(200);
      expect((await call(url, "GET", "/v2/devices", { token })).status).to.equal(200);
    }
    const relogin = await deviceLogin(urlOf(1), user.username, revoked.deviceId, device, revoked.credential);
    expect(relogin.status).to.equal(403);
    expect(relogin.body.error.code).to.equal("FORBIDDEN");

    const list = await call(urlOf(1), "GET", "/v2/devices", { token });
    const byId = new Map(list.body.devices.map((d: any) => [d.deviceId, d]));
    expect((byId.get(revoked.deviceId) as any).revokedAt).to.equal(done.body.revokedAt);
    expect((byId.get(kept.deviceId) as any).revokedAt).to.equal(null);

    // Its key packages went with it: a peer claiming the user's packages gets the kept device's only, each time.
    const { token: peerToken } = await registered("revpeer");
    for (let i = 0; i < 3; i++) {
      const claimed = await call(urlOf(i % 2), "POST", `/v2/users/${user.username}/key-packages/claim`, { token: peerToken, deviceId: "p1", body: {} });
      expect(claimed.status, JSON.stringify(claimed.body)).to.equal(200);
      expect(claimed.body.keyPackages.map((k: any) => k.deviceId)).to.deep.equal([kept.deviceId]);
    }
  });

  // Last: it moves the chain's clock forward past the reset delay.
  it("refuses a credential signed by a key that a reset replaced, at approval and at login", async () => {
    const { user, token } = await registered("reset");
    const device = newDevice();
    const before = await linked(user, token, device);

    const third = newIdentity();
    const requested = await resetUser(urlOf(0), chain, user, third);
    expect(requested.status, JSON.stringify(requested.body)).to.equal(200);
    await chain.provider.send("evm_increaseTime", [61]);
    await chain.provider.send("evm_mine", []);
    await waitFor("the relay to complete the reset", async () => (await chain.registry.keyCount(user.username)) >= 2n, 60_000);
    const approver = await waitFor("a login with the reset key", async () => {
      const session = await login(urlOf(0), chain.domain, { ...user, identity: third });
      return session.status === 200 ? session.body.token : null;
    });

    const stale = await deviceLogin(urlOf(1), user.username, before.deviceId, device, before.credential);
    expect(stale.status, JSON.stringify(stale.body)).to.equal(409);
    expect(stale.body.error.code).to.equal("KEY_UNVERIFIED");

    const fresh = newDevice();
    const link = await requestLink(urlOf(1), user.username, fresh);
    const byResetKey = await call(urlOf(0), "POST", `/v2/device-links/${link.code}/approve`, {
      token: approver,
      body: { credential: await credentialFor(user.username, user.identity, 0, fresh) },
    });
    expect(byResetKey.status).to.equal(409);
    expect(byResetKey.body.error.code).to.equal("KEY_UNVERIFIED");
    const byCurrentKey = await call(urlOf(0), "POST", `/v2/device-links/${link.code}/approve`, {
      token: approver,
      body: { credential: await credentialFor(user.username, third, 1, fresh) },
    });
    expect(byCurrentKey.status, JSON.stringify(byCurrentKey.body)).to.equal(200);
    expect(byCurrentKey.body.keyIndex).to.equal(1);
  });
});

describe("device links and limits (in-process relay, memory stores)", function () {
  this.timeout(120_000);
  let chain: ChainFixture;
  let relay: RelayFixture;

  before(async () => {
    chain = await startChain();
    relay = await startRelay({ chain, env: { MAX_DEVICES_PER_USER: "2", DEVICE_LINK_TTL_SECONDS: "5" } });
  });
  after(async () => {
    await relay?.close();
    await chain?.close();
  });

  async function credentialFor(username: string, identity: Identity, device: TestDevice): Promise<string> {
    const credential = await authorizeDevice({
      username,
      keyIndex: 0,
      chainId: chain.deployed.chainId,
      contract: chain.deployed.address,
      devicePublicKey: device.publicKey,
      sign: (text) => new Wallet(identity.privateKey).signMessage(text),
    });
    return encodeBase64(credential.identity);
  }

  async function registered(prefix: string) {
    const user = newTestUser(uniqueUsername(prefix));
    expect((await registerUser(relay.url, chain.domain, user)).status).to.equal(200);
    const session = await login(relay.url, chain.domain, user);
    expect(session.status).to.equal(200);
    return { user, token: session.body.token as string };
  }

  it("a link request expires: its status says so and it can no longer be approved", async () => {
    const { user, token } = await registered("exp");
    const device = newDevice();
    const link = (await call(relay.url, "POST", "/v2/device-links", { body: { username: user.username, devicePublicKey: hex(device.publicKey) } })).body;
    expect(link.expiresAt - Date.now()).to.be.at.most(5_000);
    await waitFor("the link request to expire", async () => (await call(relay.url, "GET", `/v2/device-links/status?secret=${link.linkSecret}`)).body.status === "expired", 30_000, 250);
    const late = await call(relay.url, "POST", `/v2/device-links/${link.code}/approve`, { token, body: { credential: await credentialFor(user.username, user.identity, device) } });
    expect(late.status).to.equal(404);
    expect(late.body.error.code).to.equal("NOT_FOUND");
  });

  it("refuses a link request for an unknown user and a malformed device key", async () => {
    const unknown = await call(relay.url, "POST", "/v2/device-links", { body: { username: uniqueUsername("nobody"), devicePublicKey: hex(newDevice().publicKey) } });
    expect(unknown.status).to.equal(404);
    expect(unknown.body.error.code).to.equal("UNKNOWN_USER");
    const bad = await call(relay.url, "POST", "/v2/device-links", { body: { username: "someone", devicePublicKey: "abcd" } });
    expect(bad.status).to.equal(400);
    expect(bad.body.error.field).to.equal("devicePublicKey");
  });

  it("stops at MAX_DEVICES_PER_USER with a clear error, and a revocation makes room", async () => {
    const { user, token } = await registered("lim");
    const approve = async (device: TestDevice) => {
      const link = (await call(relay.url, "POST", "/v2/device-links", { body: { username: user.username, devicePublicKey: hex(device.publicKey) } })).body;
      return call(relay.url, "POST", `/v2/device-links/${link.code}/approve`, { token, body: { credential: await credentialFor(user.username, user.identity, device) } });
    };
    const first = await approve(newDevice());
    expect(first.status, JSON.stringify(first.body)).to.equal(200);
    // The device holding the identity key registers its own MLS key too, and counts.
    const own = newDevice();
    const self = await call(relay.url, "POST", "/v2/devices/self", {
      token,
      deviceId: "primary",
      body: { devicePublicKey: hex(own.publicKey), credential: await credentialFor(user.username, user.identity, own), deviceName: "desktop" },
    });
    expect(self.status, JSON.stringify(self.body)).to.equal(200);
    expect(self.body).to.include({ deviceId: "primary", name: "desktop" });

    const third = newDevice();
    const refused = await approve(third);
    expect(refused.status).to.equal(409);
    expect(refused.body.error.code).to.equal("LIMIT_EXCEEDED");
    expect(refused.body.error.message).to.match(/device limit reached.*2/);

    expect((await call(relay.url, "POST", `/v2/devices/${first.body.deviceId}/revoke`, { token })).status).to.equal(200);
    const after = await approve(third);
    expect(after.status, JSON.stringify(after.body)).to.equal(200);
    const list = (await call(relay.url, "GET", "/v2/devices", { token })).body;
    expect(list.maxDevices).to.equal(2);
    expect(list.devices.filter((d: any) => d.revokedAt === null).map((d: any) => d.deviceId).sort()).to.deep.equal(["primary", after.body.deviceId].sort());
  });

  it("bounds the pending link requests of one user", async () => {
    const { user } = await registered("pend");
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      statuses.push((await call(relay.url, "POST", "/v2/device-links", { body: { username: user.username, devicePublicKey: hex(newDevice().publicKey) } })).status);
    }
    expect(statuses).to.deep.equal([200, 200, 200, 200, 200, 409]);
  });
});

describe("device revocation stores (Redis, MariaDB, memory)", function () {
  this.timeout(30_000);
  let db: TestDatabase;
  let pool: ReturnType<typeof createTestPool>;
  before(async () => {
    db = await createTestDatabase("chat_device_revocations");
    pool = createTestPool(db.url);
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  const stores: Record<string, () => SessionRevocations> = {
    redis: () => createSessionRevocations({ redisUrl: REDIS_URL, pool: null }),
    mysql: () => createSessionRevocations({ redisUrl: null, pool }),
    memory: () => createSessionRevocations({ redisUrl: null, pool: null }),
  };
  for (const [kind, create] of Object.entries(stores)) {
    it(`${kind}: a revoked device stays revoked until the given time, and only that device of that user`, async () => {
      const store = create();
      try {
        await store.migrate();
        const username = uniqueUsername("dev");
        expect(await store.isDeviceRevoked(username, "phone")).to.equal(false);
        await store.revokeDevice(username, "phone", Date.now() + 60_000);
        expect(await store.isDeviceRevoked(username, "phone")).to.equal(true);
        expect(await store.isDeviceRevoked(username, "laptop")).to.equal(false);
        expect(await store.isDeviceRevoked(uniqueUsername("dev"), "phone")).to.equal(false);
        await store.revokeDevice(username, "old", Date.now() - 1);
        expect(await store.isDeviceRevoked(username, "old"), "a revocation already past is not stored").to.equal(false);
      } finally {
        await store.close();
      }
    });
  }
});
