/**
 * The rules of the login session (kept in a SessionStore): it belongs to one relay and ends at its
 * expiry, when the token and the unlocked keys are dropped.
 */
import { ChatError } from "../protocol/errors";
import type { Session, SessionStore } from "./stores";

export type { Session };

/** The current session for this relay, or NOT_LOGGED_IN / SESSION_EXPIRED. */
export function requireSession(sessions: SessionStore, relayOrigin: string, now = Date.now()): Session {
  const session = sessions.read();
  if (!session) throw new ChatError("NOT_LOGGED_IN", "not logged in: run chat login USER (or chat register USER)");
  if (session.relay !== relayOrigin) {
    throw new ChatError("NOT_LOGGED_IN", `logged in at ${session.relay}, not at ${relayOrigin}: run chat login ${session.username}`);
  }
  if (session.expiresAt <= now) {
    sessions.delete();
    throw new ChatError("SESSION_EXPIRED", "session expired: log in again");
  }
  return session;
}

/** The session for this relay while it lasts, without failing (for showing who is logged in). */
export function currentSession(sessions: SessionStore, relayOrigin: string, now = Date.now()): Session | undefined {
  const session = sessions.read();
  return session && session.relay === relayOrigin && session.expiresAt > now ? session : undefined;
}
