/**
 * The one error base class of the project (as libsignal and XMTP do): every error a user or a peer
 * can meet carries a stable `code`. Messages never contain passwords, credentials, keys or plaintext.
 */
export const ERROR_CODES = [
  // input
  "BAD_REQUEST",
  "INVALID_USERNAME",
  "INVALID_PUBLIC_KEY",
  "INVALID_SIGNATURE",
  "FRAME_TOO_LARGE",
  "MESSAGE_TOO_LONG",
  // accounts
  "USERNAME_TAKEN",
  "UNKNOWN_USER",
  "WRONG_PASSWORD",
  "WRONG_KEY",
  "KEY_UNCHANGED",
  "SIGNATURE_EXPIRED",
  "CHALLENGE_INVALID",
  "UNAUTHORIZED",
  "SESSION_EXPIRED",
  "FORBIDDEN",
  "RATE_LIMITED",
  "RESET_PENDING",
  "NO_PENDING_RESET",
  "RESET_NOT_DUE",
  /** login refused: the password or the key did not match (one code, so a guesser learns neither) */
  "LOGIN_FAILED",
  /** a session token ended before its expiry: logged out, or its key or password changed since */
  "SESSION_REVOKED",
  // trust
  "KEY_MISMATCH",
  "KEY_UNVERIFIED",
  "ENVELOPE_INVALID",
  "DUPLICATE",
  "CERTIFICATE_CHANGED",
  // messages v2 (MLS Delivery Service)
  "EPOCH_CONFLICT",
  "NOT_GROUP_MEMBER",
  "UNKNOWN_GROUP",
  "GROUP_EXISTS",
  "LIMIT_EXCEEDED",
  // infrastructure
  "CHAIN_UNAVAILABLE",
  "STORAGE_UNAVAILABLE",
  "RELAY_UNREACHABLE",
  "CACHE_STALE",
  "NOT_FOUND",
  "INTERNAL",
  // met only inside a client, never sent by a relay
  "CHAIN_MISMATCH",
  "CONTRACT_MISMATCH",
  "NOT_LOGGED_IN",
  "NO_LOCAL_KEY",
  "USAGE",
  "CANCELLED",
  // another chat process of the same user holds the device's MLS state for too long
  "DEVICE_BUSY",
  // the recipient's mailbox is at its quota: nothing was stored; retryable once they have read
  "MAILBOX_FULL",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class ChatError extends Error {
  readonly code: ErrorCode;
  /** Fields safe to show or send (never secrets). */
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = "ChatError";
    this.code = code;
    this.details = details;
  }
}

export function isChatError(value: unknown): value is ChatError {
  return value instanceof ChatError;
}
