/**
 * The login session, in session.json (0600): the relay's token and, while logged in, the unlocked
 * identity keys, so that send/inbox/talk need no password (as a messenger app on a phone). `chat logout`
 * deletes it; at rest without a session only the password-encrypted keystores remain.
 */
import { ChatError } from "../protocol/errors";
import { CliError } from "./errors";
import type { Home } from "./home";
import type { UnlockedKey } from "./keystore";

export interface Session {
  relay: string;
  username: string;
  token: string;
  expiresAt: number;
  keyIndex: number;
  /** current key first */
  keys: UnlockedKey[];
}

const file = (home: Home) => home.path("session.json");

export function readSession(home: Home): Session | undefined {
  return home.readJson<Session>(file(home));
}

export function writeSession(home: Home, session: Session): void {
  session.keys = [...session.keys].sort((a, b) => b.index - a.index);
  home.writeJson(file(home), session);
}

export function deleteSession(home: Home): boolean {
  const existed = home.exists(file(home));
  home.remove(file(home));
  return existed;
}

/** The current session for this relay, or NOT_LOGGED_IN / SESSION_EXPIRED. */
export function requireSession(home: Home, relayOrigin: string, now = Date.now()): Session {
  const session = readSession(home);
  if (!session) throw new CliError("NOT_LOGGED_IN", "not logged in: run chat login USER (or chat register USER)");
  if (session.relay !== relayOrigin) {
    throw new CliError("NOT_LOGGED_IN", `logged in at ${session.relay}, not at ${relayOrigin}: run chat login ${session.username}`);
  }
  if (session.expiresAt <= now) {
    expireSession(home);
    throw new ChatError("SESSION_EXPIRED", "session expired: log in again");
  }
  return session;
}

/** Drops the token and the unlocked keys when the session is over. */
export function expireSession(home: Home): void {
  deleteSession(home);
}
