import { keyFingerprint, publicKeyOf } from "../../protocol/keys";
import { formatSafetyNumber, safetyNumber } from "../../protocol/safety-number";
import type { Context } from "../context";
import { parseUsername } from "../errors";
import { localTime } from "../messaging";
import { fetchVerifiedKeys, announceKeyChanges, type KeyBookDeps, type VerifiedKey } from "../trust";

/** The safety number of the logged-in user and `peer`'s current key, when logged in. */
export function pairSafetyNumber(ctx: Pick<Context, "sessions" | "relay">, peer: string, peerKey: VerifiedKey): { me: string; digits: string } | undefined {
  const session = ctx.sessions.read();
  if (!session || session.relay !== ctx.relay.origin || session.username === peer) return undefined;
  const digits = safetyNumber({
    a: { username: session.username, publicKey: publicKeyOf(session.keys[0].privateKey) },
    b: { username: peer, publicKey: peerKey.publicKey },
  });
  return { me: session.username, digits };
}

/** chat whois USER: the key history from the chain (kind, block time, fingerprint) and the safety number. */
export async function whois(ctx: KeyBookDeps & Pick<Context, "sessions">, rawUsername: string): Promise<void> {
  const username = parseUsername(rawUsername);
  const keys = await fetchVerifiedKeys(ctx, username);
  const session = ctx.sessions.read();
  if (session && session.relay === ctx.relay.origin && session.username !== username) announceKeyChanges(ctx, session.username, username, keys);
  const current = keys[keys.length - 1];
  const pair = pairSafetyNumber(ctx, username, current);
  const verified = session ? ctx.contacts.get(session.username, username)?.verified : undefined;
  const isVerified = Boolean(verified && verified.index === current.index);
  if (ctx.out.json) {
    ctx.out.data(
      {
        type: "whois",
        username,
        keys: keys.map((key) => ({ index: key.index, kind: key.kind, timestamp: key.timestamp, address: key.address, fingerprint: key.fingerprint })),
        current: current.index,
        verified: isVerified,
        safetyNumber: pair ? formatSafetyNumber(pair.digits) : null,
      },
      "",
    );
    return;
  }
  const lines = [`${username}: ${keys.length} key${keys.length === 1 ? "" : "s"} on chain (checked over your own RPC)`];
  for (const key of keys) {
    lines.push(`  #${key.index}  ${key.kind.padEnd(10)}  ${localTime(key.timestamp * 1000)}  ${key.fingerprint}${key === current ? "  (current)" : ""}`);
  }
  if (pair) {
    lines.push(`Safety number of ${pair.me} and ${username} (compare it with ${username} in person or on a call):`);
    lines.push(formatSafetyNumber(pair.digits, { lines: true }).replace(/^/gm, "  "));
    lines.push(isVerified ? "Verified by you." : `Not verified: when the numbers match, run chat verify ${username}`);
  } else if (session?.username === username) {
    lines.push(`This is you. Your fingerprint: ${keyFingerprint(current.publicKey)}`);
  }
  ctx.out.data({}, lines.join("\n"));
}
