/**
 * Login: a fresh single-use challenge, then username + credential + an EIP-191 personal signature
 * (https://eips.ethereum.org/EIPS/eip-191) by the user's current key over loginMessage(). Proof of the
 * password alone is not enough (a stolen password without the device fails), nor is the key alone.
 * A wrong password and a right password with a wrong key get the same answer (LOGIN_FAILED), after the
 * same work, so a guesser never learns that a password was right; each failure counts in the user's
 * shared limits and backoff (password-check.ts). Challenges live in the cache storage so that any relay
 * instance can consume one another issued. Logout revokes the caller's token on every instance.
 *
 * Device login (POST /v1/login/device, after the same challenge): a linked device that never holds the
 * identity key proves its Ed25519 key (RFC 8032) over deviceLoginText(); the device must be registered
 * and not revoked, and its credential must stand on chain as strictly as clients check it. The session
 * is bound to the user, the credential's key index and the device.
 */
import { createPublicKey, randomBytes, verify as verifySignature } from "node:crypto";
import { Router, type Request } from "express";
import { getAddress, hexlify, verifyMessage } from "ethers";
import { ChatError } from "../../protocol/errors";
import { publicKeyToAddress } from "../../protocol/keys";
import { ChallengeRequest, LoginRequest, loginMessage } from "../../protocol/wire";
import { DeviceLoginRequest, deviceLoginText } from "../../protocol/wire-devices";
import { decodeBase64, encodeBase64 } from "../../protocol/wire-v2";
import { issueSessionToken } from "../sessions";
import type { DeviceStore } from "../storage/devices-types";
import { checkDeviceCredential } from "./device-credential-check";
import { assertCacheFresh, clientAddress, fromStorage, requireSession, type HttpContext } from "./context";
import { parseWith } from "./errors";
import { admitPasswordAttempt, passwordMatches, recordPasswordFailure, recordPasswordSuccess } from "./password-check";

interface Account {
  credentialHash: string;
  address: string;
  keyIndex: number;
}

const LOGIN_FAILED_MESSAGE = "login failed: wrong password, or a key that is not the user's current key";

/** RFC 8032 Ed25519 over `message` by the raw 32-byte `publicKey` (SPKI of RFC 8410 for node:crypto). */
function ed25519Verifies(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey).toString("base64url") }, format: "jwk" });
    return verifySignature(null, message, key, signature);
  } catch {
    return false;
  }
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

export function loginRoutes(ctx: HttpContext, options: { devices?: DeviceStore } = {}): Router {
  const router = Router();
  const { settings } = ctx;

  const limitChallenge = (req: Request, username: string) =>
    ctx.limits.limiter.hit([
      { key: `challenge:user:${username}`, limit: settings.loginRateLimit.perUser },
      { key: `challenge:addr:${clientAddress(req)}`, limit: settings.loginRateLimit.perAddress },
    ]);

  async function fromCache(username: string): Promise<Account | null> {
    const [user, keys] = await fromStorage(Promise.all([ctx.cache.getUser(username), ctx.cache.getKeys(username)]));
    if (!user || keys.length === 0) return null;
    return { credentialHash: user.credentialHash, address: publicKeyToAddress(user.publicKey), keyIndex: keys[keys.length - 1].index };
  }

  /** The chain's answer, for a user the cache has not seen yet or that changed since the last sync. */
  async function fromChain(username: string): Promise<Account | null> {
    const [credentialHash, current] = await Promise.all([ctx.chain.credentialHash(username), ctx.chain.currentKey(username)]);
    if (!current) return null;
    return { credentialHash, address: current.address, keyIndex: current.index };
  }

  router.post("/v1/login/challenge", async (req, res) => {
    const body = parseWith(ChallengeRequest, req.body);
    await limitChallenge(req, body.username);
    const challenge = hexlify(randomBytes(32)); // 256 bits from the OS CSPRNG: unguessable and never reused
    const expiresAt = ctx.clock() + settings.challengeTtlMs;
    await fromStorage(ctx.cache.putChallenge({ username: body.username, challenge, expiresAt }));
    res.json({ challenge, expiresAt });
  });

  router.post("/v1/login", async (req, res) => {
    const body = parseWith(LoginRequest, req.body);
    await admitPasswordAttempt(ctx, req, body.username);
    assertCacheFresh(ctx);

    let account = await fromCache(body.username);
    let checkedChain = false;
    /** On a cache miss or mismatch, the chain decides (the cache may lag a block behind). */
    const recheck = async (): Promise<Account | null | undefined> => {
      if (checkedChain) return undefined;
      checkedChain = true;
      try {
        return await fromChain(body.username);
      } catch (error) {
        if (account) return undefined; // chain unreachable: the cache's verdict stands
        throw error;
      }
    };
    if (!account) {
      account = (await recheck()) ?? null;
      // Whether a name is registered is public on chain: saying so tells a guesser nothing new.
      if (!account) {
        ctx.failedLogins.inc({ reason: "unknown_user" });
        throw new ChatError("UNKNOWN_USER", `no user named ${body.username}`);
      }
    }

    const fresh = await fromStorage(ctx.cache.consumeChallenge({ username: body.username, challenge: body.challenge.toLowerCase(), now: ctx.clock() }));
    if (!fresh) {
      ctx.failedLogins.inc({ reason: "challenge" });
      throw new ChatError("CHALLENGE_INVALID", "challenge unknown, used or expired: request a new one");
    }

    const chainId = (await ctx.chain.chainId()).toString();
    const message = loginMessage({ username: body.username, challenge: body.challenge.toLowerCase(), chainId, contractAddress: ctx.chain.contractAddress });
    let signer: string | null;
    try {
      signer = getAddress(verifyMessage(message, body.signature));
    } catch {
      signer = null; // a malformed signature is a wrong key: answering otherwise would tell the password was right
    }

    // Both factors are always checked, and the chain re-read on either mismatch, so that a wrong password
    // and a wrong key take the same path and the same time to the same answer.
    const both = (a: Account) => ({ password: passwordMatches(ctx, body.username, body.credential, a.credentialHash), key: signer === a.address });
    let verdict = both(account);
    if (!verdict.password || !verdict.key) {
      const latest = await recheck();
      if (latest) {
        const again = both(latest);
        if (again.password && again.key) [account, verdict] = [latest, again];
      }
    }
    if (!verdict.password || !verdict.key) {
      // The metric's reason is for the operator only; the caller hears one answer.
      await recordPasswordFailure(ctx, body.username, verdict.password ? "wrong_key" : "wrong_password");
      throw new ChatError("LOGIN_FAILED", LOGIN_FAILED_MESSAGE);
    }
    // Only a full success forgets the failures: forgetting them on a right password alone would tell
    // a guesser holding no key that its guess was right (the next guess would not wait).
    await recordPasswordSuccess(ctx, body.username);

    const { token, claims } = issueSessionToken({
      secret: settings.sessionSecret,
      username: body.username,
      keyIndex: account.keyIndex,
      credentialHash: account.credentialHash,
      now: ctx.clock(),
      ttlMs: settings.sessionTtlMs,
    });
    ctx.logger.info({ username: body.username, keyIndex: account.keyIndex }, "logged in");
    res.json({ token, expiresAt: claims.exp, keyIndex: claims.keyIndex });
  });

  const { devices } = options;
  if (devices) {
    router.post("/v1/login/device", async (req, res) => {
      const body = parseWith(DeviceLoginRequest, req.body);
      await ctx.limits.limiter.hit([
        { key: `device-login:user:${body.username}`, limit: settings.loginRateLimit.perUser },
        { key: `device-login:addr:${clientAddress(req)}`, limit: settings.loginRateLimit.perAddress },
      ]);
      assertCacheFresh(ctx);
      const challenge = body.challenge.toLowerCase();
      const fresh = await fromStorage(ctx.cache.consumeChallenge({ username: body.username, challenge, now: ctx.clock() }));
      if (!fresh) {
        ctx.failedLogins.inc({ reason: "challenge" });
        throw new ChatError("CHALLENGE_INVALID", "challenge unknown, used or expired: request a new one");
      }
      const device = await fromStorage(devices.device(body.username, body.deviceId));
      if (!device) {
        ctx.failedLogins.inc({ reason: "unknown_device" });
        throw new ChatError("LOGIN_FAILED", `device login failed: ${body.username} has no device ${body.deviceId}`);
      }
      if (device.revokedAt !== null) {
        ctx.failedLogins.inc({ reason: "revoked_device" });
        throw new ChatError("FORBIDDEN", `device ${body.deviceId} was revoked by its user: link it again`);
      }
      const chainId = await ctx.chain.chainId();
      const text = deviceLoginText({ username: body.username, challenge, chainId, contract: ctx.chain.contractAddress, deviceId: body.deviceId });
      if (!ed25519Verifies(device.publicKey, new TextEncoder().encode(text), new Uint8Array(Buffer.from(body.signature, "hex")))) {
        ctx.failedLogins.inc({ reason: "device_signature" });
        throw new ChatError("LOGIN_FAILED", "device login failed: the signature is not by this device's key");
      }

      // The newest credential that stands: the one sent, or the relay's when a device holding the identity
      // key re-authorised this one (after a rotation) while it was away.
      const sent = decodeBase64(body.credential);
      const candidates = sameBytes(sent, device.credential) ? [sent] : [sent, device.credential];
      let stood: { credential: Uint8Array; keyIndex: number } | null = null;
      let refusal: unknown = null;
      for (const credential of candidates) {
        try {
          const identity = await checkDeviceCredential(ctx, { username: body.username, devicePublicKey: device.publicKey, identityBytes: credential });
          if (!stood || identity.keyIndex > stood.keyIndex) stood = { credential, keyIndex: identity.keyIndex };
        } catch (error) {
          if (!(error instanceof ChatError) || error.code === "CHAIN_UNAVAILABLE" || error.code === "STORAGE_UNAVAILABLE") throw error;
          refusal ??= error;
        }
      }
      if (!stood) {
        ctx.failedLogins.inc({ reason: "device_credential" });
        const why = refusal instanceof ChatError ? refusal.message : "no credential stands";
        throw new ChatError("KEY_UNVERIFIED", `device login failed: ${why}; a device holding the identity key must authorise this device again`);
      }
      if (stood.keyIndex > device.keyIndex) {
        await fromStorage(devices.updateCredential({ username: body.username, deviceId: body.deviceId, keyIndex: stood.keyIndex, credential: stood.credential }));
      }

      let credentialHash: string;
      const user = await fromStorage(ctx.cache.getUser(body.username));
      if (user) credentialHash = user.credentialHash;
      else credentialHash = await ctx.chain.credentialHash(body.username);
      const now = ctx.clock();
      await fromStorage(devices.touch(body.username, body.deviceId, now));
      const { token, claims } = issueSessionToken({
        secret: settings.sessionSecret,
        username: body.username,
        keyIndex: stood.keyIndex,
        credentialHash,
        now,
        ttlMs: settings.sessionTtlMs,
        deviceId: body.deviceId,
      });
      ctx.logger.info({ username: body.username, deviceId: body.deviceId, keyIndex: stood.keyIndex }, "device logged in");
      res.json({ token, expiresAt: claims.exp, keyIndex: stood.keyIndex, deviceId: body.deviceId, credential: encodeBase64(stood.credential) });
    });
  }

  /** Ends the caller's session on every relay instance: its token is refused until it would have expired. */
  router.post("/v1/logout", async (req, res) => {
    const claims = await requireSession(ctx, req).catch((error) => {
      // An already ended session is logged out: the answer is the same, so logout is idempotent.
      if (error instanceof ChatError && (error.code === "SESSION_REVOKED" || error.code === "SESSION_EXPIRED")) return null;
      throw error;
    });
    if (claims) {
      await fromStorage(ctx.sessions.revoke(claims));
      ctx.logger.info({ username: claims.sub }, "logged out");
    }
    res.json({ loggedOut: true });
  });

  return router;
}
