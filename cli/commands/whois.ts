import { keyFingerprint, publicKeyOf } from "../../protocol/keys";
import { formatSafetyNumber, safetyNumber } from "../../protocol/safety-number";
import type { Context } from "../context";
import { parseUsername } from "../errors";
import { localTime } from "../messaging";
import { openSessionDevice, type SessionDeviceDeps } from "../mls/session-device";
import { currentSession, type Session } from "../session";
import { fetchVerifiedKeys, announceKeyChanges, type KeyBookDeps, type VerifiedKey } from "../trust";
import { homeHasDevice } from "../mls/device-files";

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
export async function whois(ctx: KeyBookDeps & SessionDeviceDeps & Pick<Context, "sessions">, rawUsername: string): Promise<void> {
  const username = parseUsername(rawUsername);
  const keys = await fetchVerifiedKeys(ctx, username);
  const session = ctx.sessions.read();
  if (session && session.relay === ctx.relay.origin && session.username !== username) announceKeyChanges(ctx, session.username, username, keys);
  const current = keys[keys.length - 1];
  const pair = pairSafetyNumber(ctx, username, current);
  const verified = session ? ctx.contacts.get(session.username, username)?.verified : undefined;
  const isVerified = Boolean(verified && verified.index === current.index);
  const devices = session ? await devicesInOwnGroups(ctx, session, username) : undefined;
  if (ctx.out.json) {
    ctx.out.data(
      {
        type: "whois",
        username,
        keys: keys.map((key) => ({ index: key.index, kind: key.kind, timestamp: key.timestamp, address: key.address, fingerprint: key.fingerprint })),
        current: current.index,
        verified: isVerified,
        safetyNumber: pair ? formatSafetyNumber(pair.digits) : null,
        devices: devices ?? null,
      },
      "",
    );
    return;
  }
  const lines = [`${username}: ${keys.length} key${keys.length === 1 ? "" : "s"} on chain (checked over your own RPC)`];
  for (const key of keys) {
    lines.push(`  #${key.index}  ${key.kind.padEnd(10)}  ${localTime(key.timestamp * 1000)}  ${key.fingerprint}${key === current ? "  (current)" : ""}`);
  }
  if (devices !== undefined && devices > 0) {
    lines.push(`${username} has ${devices} device${devices === 1 ? "" : "s"} in your conversations (each authorised by their key on chain)`);
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

/**
 * How many devices of `username` this device sees: the distinct device leaves of that user in the groups
 * this device shares with them (its own trees, each leaf checked against the chain when it joined), not the
 * relay's word. Undefined when this home has no MLS device for the session or it cannot be opened.
 */
async function devicesInOwnGroups(ctx: SessionDeviceDeps, session: Session, username: string): Promise<number | undefined> {
  if (!currentSession(ctx.sessions, ctx.relay.origin) || !homeHasDevice(ctx.home, session.username)) return undefined;
  try {
    return (await openSessionDevice(ctx, session)).deviceCount(username);
  } catch {
    return undefined;
  }
}
