import { ChatError } from "../../protocol/errors";
import { formatSafetyNumber } from "../../protocol/safety-number";
import type { Context } from "../context";
import { parseUsername } from "../errors";
import { askYesNo } from "../input";
import { requireSession } from "../session";
import { announceKeyChanges, fetchVerifiedKeys, type KeyBookDeps } from "../trust";
import { pairSafetyNumber } from "./whois";

/**
 * chat verify USER: shows the safety number of you and USER's current key and asks whether it matched
 * what USER sees before marking that key verified. --yes answers for scripts that compared it already;
 * without a terminal the answer is read as a line from standard input.
 */
export async function verify(ctx: KeyBookDeps & Pick<Context, "sessions" | "lines" | "options">, rawUsername: string): Promise<void> {
  const username = parseUsername(rawUsername);
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  if (username === session.username) throw new ChatError("BAD_REQUEST", "you cannot verify yourself");
  const keys = await fetchVerifiedKeys(ctx, username);
  announceKeyChanges(ctx, session.username, username, keys);
  const current = keys[keys.length - 1];
  const pair = pairSafetyNumber(ctx, username, current)!;
  const yes = Boolean(ctx.options.yes);
  if (!yes) {
    ctx.out.info(
      `Safety number of ${session.username} and ${username} (${username}'s key #${current.index}, ${current.fingerprint}):\n${formatSafetyNumber(pair.digits, { lines: true }).replace(/^/gm, "  ")}\nCompare it with the number ${username} sees (in person or on a call).`,
      { always: true },
    );
    const matched = await askYesNo(`Does it match what ${username} sees? [y/N] `, { lines: ctx.lines, passwordStdin: Boolean(ctx.options.passwordStdin) });
    if (!matched) throw new ChatError("CANCELLED", `not verified: ${username}'s key stays unverified`);
  }
  // announceKeyChanges has just pinned these keys: the pin exists.
  const pin = ctx.contacts.get(session.username, username)!;
  ctx.contacts.put(session.username, username, { ...pin, verified: { index: current.index, publicKey: current.publicKey, at: Date.now() } });
  ctx.out.data(
    { type: "verified", username, keyIndex: current.index, fingerprint: current.fingerprint, safetyNumber: formatSafetyNumber(pair.digits) },
    `Marked ${username}'s key #${current.index} (${current.fingerprint}) as verified. Safety number:\n${formatSafetyNumber(pair.digits, { lines: true })}\nYou will be warned if it changes.`,
  );
}
