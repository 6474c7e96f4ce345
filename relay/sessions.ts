/**
 * Session tokens that every relay instance can verify without shared memory: an HMAC-SHA256
 * (RFC 2104) over the claims, keyed with SESSION_SECRET, which all instances behind one load balancer
 * share. Format: base64url(JSON claims) "." base64url(mac). Claims carry no secret.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { ChatError } from "../protocol/errors";
import { isValidUsername } from "../protocol/username";

export interface SessionClaims {
  /** the username */
  sub: string;
  /** index of the key the user proved at login */
  keyIndex: number;
  /** issued at, Unix ms */
  iat: number;
  /** expires at, Unix ms */
  exp: number;
}

export const DEFAULT_SESSION_TTL_MS = 12 * 60 * 60 * 1000;

function mac(secret: Uint8Array, payload: string): Buffer {
  return createHmac("sha256", secret).update(`eth-chat-session.${payload}`).digest();
}

export function issueSessionToken(params: {
  secret: Uint8Array;
  username: string;
  keyIndex: number;
  now: number;
  ttlMs?: number;
}): { token: string; claims: SessionClaims } {
  const claims: SessionClaims = {
    sub: params.username,
    keyIndex: params.keyIndex,
    iat: params.now,
    exp: params.now + (params.ttlMs ?? DEFAULT_SESSION_TTL_MS),
  };
  const payload = Buffer.from(JSON.stringify(claims)).toString("base64url");
  return { token: `${payload}.${mac(params.secret, payload).toString("base64url")}`, claims };
}

/** Returns the claims of a valid, unexpired token; throws UNAUTHORIZED or SESSION_EXPIRED otherwise. */
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
    !Number.isInteger(claims.exp) ||
    !Number.isInteger(claims.iat)
  ) {
    throw new ChatError("UNAUTHORIZED", "malformed session token");
  }
  if (claims.exp <= params.now) throw new ChatError("SESSION_EXPIRED", "session expired: log in again");
  return claims;
}
