import { ChatError } from "../../protocol/errors";
import { formatSafetyNumber } from "../../protocol/safety-number";
import { assertUsername } from "../../protocol/username";
import type { Context } from "../context";
import { requireSession } from "../session";
import { announceKeyChanges, fetchVerifiedKeys, type KeyBookDeps } from "../trust";
import { pairSafetyNumber } from "./whois";

/** chat verify USER: after comparing safety numbers, mark USER's current key as verified. */
export async function verify(ctx: KeyBookDeps & Pick<Context, "sessions">, rawUsername: string): Promise<void> {
  const username = assertUsername(rawUsername);
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  if (username === session.username) throw new ChatError("BAD_REQUEST", "you cannot verify yourself");
  const keys = await fetchVerifiedKeys(ctx, username);
  announceKeyChanges(ctx, session.username, username, keys);
  const current = keys[keys.length - 1];
  const pair = pairSafetyNumber(ctx, username, current)!;
  // announceKeyChanges has just pinned these keys: the pin exists.
  const pin = ctx.contacts.get(session.username, username)!;
  ctx.contacts.put(session.username, username, { ...pin, verified: { index: current.index, publicKey: current.publicKey, at: Date.now() } });
  ctx.out.data(
    { type: "verified", username, keyIndex: current.index, fingerprint: current.fingerprint, safetyNumber: formatSafetyNumber(pair.digits) },
    `Marked ${username}'s key #${current.index} (${current.fingerprint}) as verified. Safety number:\n${formatSafetyNumber(pair.digits, { lines: true })}\nYou will be warned if it changes.`,
  );
}
