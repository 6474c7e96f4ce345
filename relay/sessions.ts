/**
 * Session tokens that every relay instance can verify without shared memory: an HMAC-SHA256
 * (RFC 2104) over the claims, keyed with SESSION_SECRET, which all instances behind one load balancer
 * share. Format: base64url(JSON claims) "." base64url(mac). Claims carry no secret.
 *
 * A valid MAC is not enough: a token names the key index and a short hash of the credential hash the
 * user had at login, so a key change (rotation, reset) or a password change ends every older session,
 * and its id can be revoked (logout) until it would have expired. SessionGuard checks all of that.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { ChatError } from "../protocol/errors";
import { isValidUsername } from "../protocol/username";
import type { RegistryChain } from "./chain/registry";
import type { CacheStore } from "./storage/cache-types";
import type { SessionRevocations } from "./storage/revocations";

export interface SessionClaims {
  /** the username */
  sub: string;
  /** index of the key the user proved at login */
  keyIndex: number;
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
}): { token: string; claims: SessionClaims } {
  const claims: SessionClaims = {
    sub: params.username,
    keyIndex: params.keyIndex,
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

/** The user's current key index and credential binding, as the cache or the chain knows them. */
interface AccountState {
  keyIndex: number;
  cred: string;
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
    return { keyIndex: keys[keys.length - 1].index, cred: credentialBinding(user.credentialHash) };
  }

  private async fromChain(username: string): Promise<AccountState | null> {
    const [credentialHash, current] = await Promise.all([this.deps.chain.credentialHash(username), this.deps.chain.currentKey(username)]);
    if (!current) return null;
    return { keyIndex: current.index, cred: credentialBinding(credentialHash) };
  }

  /** Whether `claims` still match the user's current key and credential (false when not, or unknown). */
  async current(claims: SessionClaims): Promise<boolean> {
    const matches = (state: AccountState | null) => state !== null && state.keyIndex === claims.keyIndex && state.cred === claims.cred;
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

  /** The claims of a token that still stands; throws UNAUTHORIZED, SESSION_EXPIRED or SESSION_REVOKED otherwise. */
  async authenticate(token: unknown): Promise<SessionClaims> {
    const claims = verifySessionToken({ secret: this.deps.secret, token, now: this.deps.clock() });
    if (await this.deps.revocations.isRevoked(claims.jti)) throw new ChatError("SESSION_REVOKED", "session ended by logout: log in again");
    if (!(await this.current(claims))) {
      throw new ChatError("SESSION_REVOKED", "session ended: the account's key or password changed since it began; log in again");
    }
    return claims;
  }

  /** Revokes the token's id until it would have expired, and tells every instance to close its sockets. */
  async revoke(claims: SessionClaims): Promise<void> {
    await this.deps.revocations.revoke(claims.jti, claims.exp);
    await this.deps.revocations.announce({ type: "revoked", jti: claims.jti });
  }
}
