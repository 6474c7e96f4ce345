/**
 * HTTP error answers: every status >= 400 carries ErrorBody { error: { code, message } } with a stable
 * code from protocol/errors.ts. 4xx are the caller's fault; 503 is retryable.
 */
import type { ErrorRequestHandler, Response } from "express";
import type { Logger } from "pino";
import type { z } from "zod";
import { ChatError, isChatError, type ErrorCode } from "../../protocol/errors";

export const HTTP_STATUS: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  INVALID_USERNAME: 400,
  INVALID_PUBLIC_KEY: 400,
  INVALID_SIGNATURE: 400,
  FRAME_TOO_LARGE: 413,
  MESSAGE_TOO_LONG: 413,
  USERNAME_TAKEN: 409,
  UNKNOWN_USER: 404,
  WRONG_PASSWORD: 401,
  WRONG_KEY: 401,
  KEY_UNCHANGED: 409,
  SIGNATURE_EXPIRED: 400,
  CHALLENGE_INVALID: 401,
  UNAUTHORIZED: 401,
  SESSION_EXPIRED: 401,
  FORBIDDEN: 403,
  RATE_LIMITED: 429,
  RESET_PENDING: 409,
  NO_PENDING_RESET: 409,
  RESET_NOT_DUE: 409,
  LOGIN_FAILED: 401,
  SESSION_REVOKED: 401,
  KEY_MISMATCH: 409,
  KEY_UNVERIFIED: 409,
  ENVELOPE_INVALID: 400,
  DUPLICATE: 409,
  CERTIFICATE_CHANGED: 400,
  EPOCH_CONFLICT: 409,
  NOT_GROUP_MEMBER: 403,
  UNKNOWN_GROUP: 404,
  GROUP_EXISTS: 409,
  LIMIT_EXCEEDED: 409,
  CHAIN_UNAVAILABLE: 503,
  STORAGE_UNAVAILABLE: 503,
  RELAY_UNREACHABLE: 503,
  CACHE_STALE: 503,
  NOT_FOUND: 404,
  INTERNAL: 500,
  // Met only inside a client: a relay that throws one of these has a bug.
  CHAIN_MISMATCH: 500,
  CONTRACT_MISMATCH: 500,
  NOT_LOGGED_IN: 500,
  NO_LOCAL_KEY: 500,
  USAGE: 500,
  CANCELLED: 500,
  DEVICE_BUSY: 500,
  // The recipient's quota, not the relay's disk: the sender may retry later, as with RATE_LIMITED.
  MAILBOX_FULL: 429,
};

/** Parses `value` with `schema`; a failure is BAD_REQUEST naming the first bad field. */
export function parseWith<T extends z.ZodType>(schema: T, value: unknown, where = "body"): z.infer<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue.path.length ? issue.path.join(".") : where;
  throw new ChatError("BAD_REQUEST", `${field}: ${issue.message}`, { field });
}

export function sendError(res: Response, error: ChatError): void {
  const status = HTTP_STATUS[error.code] ?? 500;
  const retryAfterSeconds = typeof error.details?.retryAfterSeconds === "number" ? error.details.retryAfterSeconds : undefined;
  if (retryAfterSeconds !== undefined) res.setHeader("Retry-After", String(retryAfterSeconds));
  const field = typeof error.details?.field === "string" ? error.details.field : undefined;
  const transactionHash = typeof error.details?.transactionHash === "string" ? error.details.transactionHash : undefined;
  res.status(status).json({
    error: {
      code: error.code,
      message: error.message,
      ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}),
      ...(field ? { field } : {}),
      ...(transactionHash ? { transactionHash } : {}),
    },
  });
}

/** The last middleware: known errors keep their code; body-parser errors become BAD_REQUEST; the rest INTERNAL. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (error, req, res, _next) => {
    if (res.headersSent) return;
    if (isChatError(error)) return sendError(res, error);
    const type = (error as { type?: string })?.type;
    if (type === "entity.parse.failed") return sendError(res, new ChatError("BAD_REQUEST", "body: not valid JSON", { field: "body" }));
    if (type === "entity.too.large") return sendError(res, new ChatError("BAD_REQUEST", "body: too large", { field: "body" }));
    if (type === "charset.unsupported" || type === "encoding.unsupported") {
      return sendError(res, new ChatError("BAD_REQUEST", "body: unsupported encoding", { field: "body" }));
    }
    // Only the error's class and message: request bodies (credentials) are never logged.
    logger.error({ method: req.method, path: req.path, err: { name: (error as Error)?.name, message: (error as Error)?.message } }, "request failed");
    sendError(res, new ChatError("INTERNAL", "internal error"));
  };
}
