import { randomBytes } from "node:crypto";
import { hexlify } from "ethers";
import { newIdentity, type Identity } from "./signing";

export interface TestUser {
  username: string;
  identity: Identity;
  /** what the CLI derives from the password with argon2id; random here (the relay sees only these 32 bytes) */
  credential: string;
}

/** A user with a fresh identity key and a random credential, not registered anywhere yet. */
export function newTestUser(username: string): TestUser {
  return { username, identity: newIdentity(), credential: randomCredential() };
}

/** A credential as the CLI would send it (32 bytes, hex): a wrong password, or a new one. */
export function randomCredential(): string {
  return hexlify(randomBytes(32));
}

/** A username no other test on the same chain or database has taken: `prefix_` and ten hex digits. */
export function uniqueUsername(prefix = "u"): string {
  return `${prefix}_${randomBytes(5).toString("hex")}`;
}
