import { gcm } from "@noble/ciphers/aes.js";
import { decodeGroupState, encodeGroupState, type ClientConfig, type ClientState } from "ts-mls";
import { ChatError } from "../errors";
import { bytesEqual, concatBytes, randomBytes } from "./bytes";

export const GROUP_STATE_SEAL_VERSION = 1;
const LABEL = new TextEncoder().encode("eth-chat mls group state v1");
const NONCE_BYTES = 12;
const KEY_BYTES = 32;

function checkKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) {
    throw new ChatError("BAD_REQUEST", "state key must be 32 bytes", { field: "key" });
  }
}

function aad(groupId: Uint8Array): Uint8Array {
  return concatBytes(LABEL, Uint8Array.of(GROUP_STATE_SEAL_VERSION), groupId);
}

/**
 * The group state (it holds this device's private keys and epoch secrets) encrypted at rest with
 * AES-256-GCM (NIST SP 800-38D) under a caller-given 32-byte key, with a random 96-bit nonce (§8.2.2)
 * and AAD binding a label and the group id, so a sealed state cannot be swapped for another group's.
 * Layout: version u8, group_id<1..255>, nonce[12], ciphertext||tag.
 */
export function sealGroupState(params: { state: ClientState; key: Uint8Array }): Uint8Array {
  checkKey(params.key);
  const groupId = params.state.groupContext.groupId;
  if (groupId.length === 0 || groupId.length > 255) throw new ChatError("BAD_REQUEST", "group id must be 1 to 255 bytes", { field: "groupId" });
  const nonce = randomBytes(NONCE_BYTES);
  const ciphertext = gcm(params.key, nonce, aad(groupId)).encrypt(encodeGroupState(params.state));
  return concatBytes(Uint8Array.of(GROUP_STATE_SEAL_VERSION, groupId.length), groupId, nonce, ciphertext);
}

/**
 * Opens a sealed state and re-attaches `clientConfig` (the authentication service is code, not data, so
 * ts-mls does not save it). Throws if the key is wrong, the bytes were changed, or it is another group's.
 */
export function openGroupState(params: {
  sealed: Uint8Array;
  key: Uint8Array;
  groupId: Uint8Array;
  clientConfig: ClientConfig;
}): ClientState {
  checkKey(params.key);
  const { sealed } = params;
  if (!(sealed instanceof Uint8Array) || sealed.length < 2 || sealed[0] !== GROUP_STATE_SEAL_VERSION) {
    throw new ChatError("BAD_REQUEST", "sealed state has an unknown version", { field: "sealed" });
  }
  const idLength = sealed[1];
  const groupId = sealed.subarray(2, 2 + idLength);
  if (!bytesEqual(groupId, params.groupId)) throw new ChatError("KEY_MISMATCH", "sealed state is for another group", { field: "groupId" });
  const nonce = sealed.subarray(2 + idLength, 2 + idLength + NONCE_BYTES);
  let plain: Uint8Array;
  try {
    plain = gcm(params.key, nonce, aad(groupId)).decrypt(sealed.subarray(2 + idLength + NONCE_BYTES));
  } catch {
    throw new ChatError("KEY_MISMATCH", "sealed state does not open with this key", { field: "key" });
  }
  const decoded = decodeGroupState(plain, 0);
  if (!decoded || decoded[1] !== plain.length) throw new ChatError("BAD_REQUEST", "sealed state does not decode", { field: "sealed" });
  return { ...decoded[0], clientConfig: params.clientConfig };
}
