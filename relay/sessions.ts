/**
 * Session tokens that every relay instance can verify without shared memory: an HMAC-SHA256
 * (RFC 2104) over the claims, keyed with SESSION_SECRET, which all instances behind one load balancer
 * share. Format: base64url(JSON claims) "." base64url(mac). Claims carry no secret.
 *
 * A valid MAC is not enough: a token names the key index and a short hash of the credential hash the
 * user had at login, so a key change (rotation, reset) or a password change ends every older session,
 * and its id can be revoked (logout) until it would have expired. SessionGuard checks all of that.
 * A device login (by the device's Ed25519 key, protocol/wire-devices.ts) adds the device id: revoking
 * the device ends every session bound to it.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { ChatError } from "../protocol/errors";
import { ROTATION_GRACE_SECONDS } from "../protocol/mls/authentication-service";
import { isValidUsername, usernameHash } from "../protocol/username";
import { DEVICE_ID_PATTERN } from "../protocol/wire-v2";
import { isSubprotocolToken, WS_BEARER_SUBPROTOCOL_PREFIX, WS_SUBPROTOCOL } from "../protocol/wire";
import type { RegistryChain } from "./chain/registry";
import type { CacheStore } from "./storage/cache-types";
import type { SessionRevocations } from "./storage/revocations";

export interface SessionClaims {
  /** the username */
  sub: string;
  /** index of the key the user proved at login (for a device login: the key that signed its credential) */
  keyIndex: number;
  /** the device a device login bound the session to; absent for an identity-key login */
  dev?: string;
  /** credentialBinding() of the on-chain credential hash at login */
  cred: string;
  /** the token's id (128 random bits), what logout revokes */
  jti: string;
  /** issued at, Unix ms */
  iat: number;
  /** expires at, Unix ms */
  exp: number;
}

export const DEFAULT_SESSION_TTL_MS = 12 * 60 * 60 * 1000;

function mac(secret: Uint8Array, payload: string): Buffer {
  return createHmac("sha256", secret).update(`eth-chat-session.${payload}`).digest();
}

/** 16 bytes of SHA-256 over the credential hash: enough to notice a change, short in every token. */
export function credentialBinding(credentialHash: string): string {
  return createHash("sha256").update(`eth-chat-session-credential.${credentialHash.toLowerCase()}`).digest().subarray(0, 16).toString("base64url");
}

export function issueSessionToken(params: {
  secret: Uint8Array;
  username: string;
  keyIndex: number;
  credentialHash: string;
  now: number;
  ttlMs?: number;
  /** binds the session to this device (a device login) */
  deviceId?: string;
}): { token: string; claims: SessionClaims } {
  if (params.deviceId !== undefined && !DEVICE_ID_PATTERN.test(params.deviceId)) throw new ChatError("BAD_REQUEST", "malformed device id", { field: "deviceId" });
  const claims: SessionClaims = {
    sub: params.username,
    keyIndex: params.keyIndex,
    ...(params.deviceId === undefined ? {} : { dev: params.deviceId }),
    cred: credentialBinding(params.credentialHash),
    jti: randomBytes(16).toString("base64url"),
    iat: params.now,
    exp: params.now + (params.ttlMs ?? DEFAULT_SESSION_TTL_MS),
  };
  const payload = Buffer.from(JSON.stringify(claims)).toString("base64url");
  return { token: `${payload}.${mac(params.secret, payload).toString("base64url")}`, claims };
}

/** Returns the claims of a well-formed, MAC-valid, unexpired token; throws UNAUTHORIZED or SESSION_EXPIRED otherwise. */
export function verifySessionToken(params: { secret: Uint8Array; token: unknown; now: number }): SessionClaims {
  const { token } = params;
  if (typeof token !== "string" || token.length > 1024) throw new ChatError("UNAUTHORIZED", "missing or malformed session token");
  const parts = token.split(".");
  if (parts.length !== 2) throw new ChatError("UNAUTHORIZED", "malformed session token");
  const [payload, signature] = parts;
  const expected = mac(params.secret, payload);
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new ChatError("UNAUTHORIZED", "invalid session token");
  }
  let claims: SessionClaims;
  try {
    claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
  } catch {
    throw new ChatError("UNAUTHORIZED", "malformed session token");
  }
  if (
    !isValidUsername(claims?.sub) ||
    !Number.isInteger(claims.keyIndex) ||
    (claims.dev !== undefined && (typeof claims.dev !== "string" || !DEVICE_ID_PATTERN.test(claims.dev))) ||
    typeof claims.cred !== "string" ||
    typeof claims.jti !== "string" ||
    !/^[A-Za-z0-9_-]{16,64}$/.test(claims.jti) ||
    !Number.isInteger(claims.exp) ||
    !Number.isInteger(claims.iat)
  ) {
    throw new ChatError("UNAUTHORIZED", "malformed session token");
  }
  if (claims.exp <= params.now) throw new ChatError("SESSION_EXPIRED", "session expired: log in again");
  return claims;
}

/** The bearer token of an Authorization header (RFC 6750), or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  return /^Bearer ([A-Za-z0-9_.~+/=-]+)$/.exec(header ?? "")?.[1];
}

/**
 * The token a browser offers in Sec-WebSocket-Protocol as `eth-chat, bearer.<token>` (it cannot set
 * Authorization on a WebSocket), or undefined: both subprotocols must be offered, the bearer one exactly
 * once, and the token must be made of RFC 7230 token characters.
 */
export function subprotocolToken(header: string | undefined): string | undefined {
  if (header === undefined || header.length > 4096) return undefined;
  const offered = header.split(",").map((protocol) => protocol.trim());
  if (!offered.includes(WS_SUBPROTOCOL)) return undefined;
  const bearers = offered.filter((protocol) => protocol.startsWith(WS_BEARER_SUBPROTOCOL_PREFIX));
  if (bearers.length !== 1) return undefined;
  const token = bearers[0].slice(WS_BEARER_SUBPROTOCOL_PREFIX.length);
  return isSubprotocolToken(token) ? token : undefined;
}

/**
 * The subprotocol the relay selects (ws's handleProtocols): `eth-chat` when offered, else none. Never
 * the bearer one, which would echo the token back in the response.
 */
export function selectSubprotocol(offered: Set<string>): string | false {
  return offered.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false;
}

/** The user's current key index and credential binding, as the cache or the chain knows them. */
interface AccountState {
  keyIndex: number;
  cred: string;
  /** the current key replaced its predecessor by a rotation at this block time (Unix s); null otherwise or unknown */
  rotatedAt: number | null;
}

/**
 * Whether a token still stands: MAC and expiry, not revoked, and its key index and credential binding
 * still the user's. The cache answers first; when it disagrees with the token the chain decides (the
 * cache may lag a block behind a fresh login), and when the chain cannot be reached the cache's refusal
 * stands: a doubtful session is refused, never let through.
 */
export class SessionGuard {
  constructor(
    private readonly deps: {
      secret: Uint8Array;
      cache: CacheStore;
      chain: RegistryChain;
      revocations: SessionRevocations;
      clock: () => number;
    },
  ) {}

  private async fromCache(username: string): Promise<AccountState | null> {
    const [user, keys] = await Promise.all([this.deps.cache.getUser(username), this.deps.cache.getKeys(username)]);
    if (!user || keys.length === 0) return null;
    const last = keys[keys.length - 1];
    return { keyIndex: last.index, cred: credentialBinding(user.credentialHash), rotatedAt: last.kind === "rotated" ? last.blockTime : null };
  }

  private async fromChain(username: string): Promise<AccountState | null> {
    const [credentialHash, current] = await Promise.all([this.deps.chain.credentialHash(username), this.deps.chain.currentKey(username)]);
    if (!current) return null;
    return { keyIndex: current.index, cred: credentialBinding(credentialHash), rotatedAt: null };
  }

  /**
   * Whether `claims` still match the user's key and credential (false when not, or unknown). An
   * identity-key session needs the current key. A device session, like the clients' strict check of a
   * device credential, also stands on the key just replaced by a rotation, within the rotation grace
   * (never one replaced by a reset): the device fetches its re-authorised credential meanwhile.
   */
  private async accountCurrent(claims: SessionClaims): Promise<boolean> {
    const nowSeconds = Math.floor(this.deps.clock() / 1000);
    const keyStands = (state: AccountState) =>
      state.keyIndex === claims.keyIndex ||
      (claims.dev !== undefined &&
        state.keyIndex === claims.keyIndex + 1 &&
        state.rotatedAt !== null &&
        nowSeconds <= state.rotatedAt + ROTATION_GRACE_SECONDS);
    const matches = (state: AccountState | null) => state !== null && keyStands(state) && state.cred === claims.cred;
    let cached: AccountState | null = null;
    try {
      cached = await this.fromCache(claims.sub);
    } catch {
      // storage down: the chain decides alone
    }
    if (matches(cached)) return true;
    try {
      return matches(await this.fromChain(claims.sub));
    } catch {
      return false;
    }
  }

  /** Whether a device session's device was revoked (false for an identity-key session). */
  private async deviceRevoked(claims: SessionClaims): Promise<boolean> {
    return claims.dev !== undefined && (await this.deps.revocations.isDeviceRevoked(claims.sub, claims.dev));
  }

  /** Whether `claims` still stand for the account: key and credential, and the device not revoked. */
  async current(claims: SessionClaims): Promise<boolean> {
    const [revoked, current] = await Promise.all([this.deviceRevoked(claims).catch(() => true), this.accountCurrent(claims)]);
    return !revoked && current;
  }

  /** The claims of a token that still stands; throws UNAUTHORIZED, SESSION_EXPIRED or SESSION_REVOKED otherwise. */
  async authenticate(token: unknown): Promise<SessionClaims> {
    const claims = verifySessionToken({ secret: this.deps.secret, token, now: this.deps.clock() });
    // The three checks are independent: run together, the slowest one bounds the latency.
    const [loggedOut, deviceRevoked, current] = await Promise.all([
      this.deps.revocations.isRevoked(claims.jti),
      this.deviceRevoked(claims),
      this.accountCurrent(claims),
    ]);
    if (loggedOut) throw new ChatError("SESSION_REVOKED", "session ended by logout: log in again");
    if (deviceRevoked) throw new ChatError("SESSION_REVOKED", "session ended: this device was revoked by its user");
    if (!current) {
      throw new ChatError("SESSION_REVOKED", "session ended: the account's key or password changed since it began; log in again");
    }
    return claims;
  }

  /**
   * Ends every session bound to the device, on every instance: refused from now until the longest a token
   * issued before now can live, and each instance re-checks the user's sockets (closing the device's).
   */
  async revokeDevice(params: { username: string; deviceId: string; sessionTtlMs: number }): Promise<void> {
    await this.deps.revocations.revokeDevice(params.username, params.deviceId, this.deps.clock() + params.sessionTtlMs);
    await this.deps.revocations.announce({ type: "account", usernameHash: usernameHash(params.username) });
  }

  /** Revokes the token's id until it would have expired, and tells every instance to close its sockets. */
  async revoke(claims: SessionClaims): Promise<void> {
    await this.deps.revocations.revoke(claims.jti, claims.exp);
    await this.deps.revocations.announce({ type: "revoked", jti: claims.jti });
  }
}
