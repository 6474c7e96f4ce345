/**
 * The one password check of the relay (login, reset), so that every route that can test a password costs
 * a guesser the same: an attempt counted against the TARGET user (and the caller's address) in the limits
 * shared by every relay instance, the user's backoff after failures, a constant-time comparison, the
 * failed_logins metric, and the backoff's failure count moved either way.
 */
import type { Request } from "express";
import { ChatError } from "../../protocol/errors";
import { credentialHashesEqual, pepperCredential } from "../../protocol/credential";
import { clientAddress, type HttpContext } from "./context";

/** Every route that tests a password or could serve as an oracle for one counts in this bucket. */
export const PASSWORD_BUCKET = "password";

export type PasswordCheckContext = Pick<HttpContext, "limits" | "failedLogins" | "logger" | "settings">;

/** Counts one password attempt against `username`; throws RATE_LIMITED over the limit or inside a backoff. */
export async function admitPasswordAttempt(ctx: PasswordCheckContext, req: Request, username: string): Promise<void> {
  const rule = ctx.settings.loginRateLimit;
  await ctx.limits.limiter.hit([
    { key: `${PASSWORD_BUCKET}:user:${username}`, limit: rule.perUser },
    { key: `${PASSWORD_BUCKET}:addr:${clientAddress(req)}`, limit: rule.perAddress },
  ]);
  await ctx.limits.backoff.checkAllowed(username);
}

/** Whether `credential` peppered for `username` equals the on-chain hash, compared in constant time. */
export function passwordMatches(ctx: PasswordCheckContext, username: string, credential: string, credentialHash: string): boolean {
  return credentialHashesEqual(pepperCredential({ pepper: ctx.settings.credentialPepper, username, credential }), credentialHash);
}

/** A failed check: the metric (by reason, for the operator) and the user's backoff. */
export async function recordPasswordFailure(ctx: PasswordCheckContext, username: string, reason: string): Promise<void> {
  ctx.failedLogins.inc({ reason });
  const { failures, delayMs } = await ctx.limits.backoff.recordFailure(username);
  ctx.logger.info({ username, reason, failures, delayMs }, "password check failed");
}

export async function recordPasswordSuccess(ctx: PasswordCheckContext, username: string): Promise<void> {
  await ctx.limits.backoff.recordSuccess(username);
}

/**
 * All of it, for a check by password alone (reset): admits the attempt, reads the on-chain hash, compares,
 * records; throws WRONG_PASSWORD (401) on a mismatch. `reason` labels the metric, e.g. "reset_wrong_password".
 */
export async function verifyPassword(
  ctx: PasswordCheckContext,
  req: Request,
  params: { username: string; credential: string; credentialHash: () => Promise<string>; reason: string },
): Promise<void> {
  await admitPasswordAttempt(ctx, req, params.username);
  const onChain = await params.credentialHash();
  if (/^0x0{64}$/.test(onChain)) throw new ChatError("UNKNOWN_USER", `no user named ${params.username}`);
  if (!passwordMatches(ctx, params.username, params.credential, onChain)) {
    await recordPasswordFailure(ctx, params.username, params.reason);
    throw new ChatError("WRONG_PASSWORD", "wrong password");
  }
  await recordPasswordSuccess(ctx, params.username);
}
