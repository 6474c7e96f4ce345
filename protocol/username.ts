import { keccak256, toUtf8Bytes } from "ethers";
import { ChatError } from "./errors";

/** The username rule, identical on chain (ChatRegistry) and off chain: 3 to 32 bytes of [a-z0-9_]. */
export const USERNAME_MIN_BYTES = 3;
export const USERNAME_MAX_BYTES = 32;
export const USERNAME_RULE = "3 to 32 characters of a-z, 0-9 and _";
const USERNAME_PATTERN = /^[a-z0-9_]{3,32}$/;

export function isValidUsername(username: unknown): username is string {
  return typeof username === "string" && USERNAME_PATTERN.test(username);
}

/** Throws INVALID_USERNAME (naming the rule) unless `username` follows the rule. */
export function assertUsername(username: unknown): string {
  if (!isValidUsername(username)) {
    throw new ChatError("INVALID_USERNAME", `invalid username: use ${USERNAME_RULE}`);
  }
  return username;
}

/** keccak256 of the UTF-8 bytes: how the contract keys users and indexes events. */
export function usernameHash(username: string): string {
  return keccak256(toUtf8Bytes(username));
}
