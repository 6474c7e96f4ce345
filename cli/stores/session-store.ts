/**
 * The login session: the relay's token and, while logged in, the unlocked identity keys, so that
 * send/inbox/talk need no password (as a messenger app on a phone). On disk it is session.json (0600);
 * `chat logout` deletes it, leaving only the password-encrypted keystores at rest.
 */
import type { Home } from "../home";
import type { UnlockedKey } from "../keystore";

export interface Session {
  relay: string;
  username: string;
  token: string;
  expiresAt: number;
  keyIndex: number;
  /** current key first; empty on a linked device, which never holds the identity key */
  keys: UnlockedKey[];
  /**
   * A linked device's session (logged in with its own Ed25519 key, POST /v1/login/device): the relay's id
   * of this device, to which the token is bound, and the device secret (hex) that opens this device's
   * MLS state, unlocked from its password-encrypted file at login. Absent on a device holding the identity key.
   */
  linked?: { deviceId: string; deviceSecret: string };
}

/** Whether the session is a linked device's (no identity key here). */
export function isLinkedSession(session: Session): session is Session & { linked: { deviceId: string; deviceSecret: string } } {
  return session.linked !== undefined;
}

export interface SessionStore {
  read(): Session | undefined;
  /** Stores the session with its keys ordered current key first. */
  write(session: Session): void;
  /** Forgets the session; whether there was one. */
  delete(): boolean;
}

const currentKeyFirst = (session: Session): Session => ({ ...session, keys: [...session.keys].sort((a, b) => b.index - a.index) });

export class FileSessionStore implements SessionStore {
  private readonly file: string;
  constructor(private readonly home: Home) {
    this.file = home.path("session.json");
  }
  read(): Session | undefined {
    return this.home.readJson<Session>(this.file);
  }
  write(session: Session): void {
    this.home.writeJson(this.file, currentKeyFirst(session));
  }
  delete(): boolean {
    const existed = this.home.exists(this.file);
    this.home.remove(this.file);
    return existed;
  }
}

export class MemorySessionStore implements SessionStore {
  private session?: Session;
  read(): Session | undefined {
    return this.session && structuredClone(this.session);
  }
  write(session: Session): void {
    this.session = structuredClone(currentKeyFirst(session));
  }
  delete(): boolean {
    const existed = this.session !== undefined;
    this.session = undefined;
    return existed;
  }
}
