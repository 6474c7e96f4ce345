import { getAddress } from "ethers";
import { ChatError } from "../errors";
import { isValidUsername, USERNAME_MAX_BYTES, USERNAME_RULE } from "../username";
import { bytesToHex, concatBytes, hexToBytes } from "./bytes";
import { MLS_CIPHER_SUITE_ID } from "./suite";

/**
 * What a device's MLS basic credential carries in its identity bytes (RFC 9420 §5.3.1: the identity is
 * opaque to MLS; the application authenticates it). ts-mls 1.6.4 cannot decode custom credential types
 * and does not pass leaf extensions to the authentication service, so the binding lives here.
 * The device's Ed25519 key is deliberately NOT in these bytes: the verifier takes it from the leaf's own
 * `signature_key`, so a credential copied to another leaf no longer verifies.
 */
export interface DeviceIdentity {
  version: 1;
  cipherSuite: number;
  username: string;
  /** index of the user's on-chain secp256k1 identity key that authorised this device */
  keyIndex: number;
  chainId: bigint;
  /** ChatRegistry address, checksummed */
  contract: string;
  /** 65-byte EIP-191 signature, 0x-hex */
  signature: string;
}

export const DEVICE_IDENTITY_VERSION = 1;
const SIGNATURE_BYTES = 65;
const ADDRESS_BYTES = 20;
const MAX_CHAIN_ID_BYTES = 32;
/** 1 + 2 + (1 + 32) + 4 + (1 + 32) + 20 + 65 */
export const MAX_DEVICE_IDENTITY_BYTES = 158;

function bad(field: string, why: string): ChatError {
  return new ChatError("BAD_REQUEST", `device identity: ${field} ${why}`, { field });
}

function chainIdBytes(chainId: bigint): Uint8Array {
  if (typeof chainId !== "bigint" || chainId <= 0n) throw bad("chainId", "must be a positive integer");
  let hex = chainId.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  if (hex.length / 2 > MAX_CHAIN_ID_BYTES) throw bad("chainId", "is longer than 32 bytes");
  return hexToBytes(hex);
}

/**
 * Canonical encoding, TLS presentation style (RFC 8446 §3, big-endian, one length byte per vector):
 * version u8, cipher_suite u16, username<1..32>, key_index u32, chain_id<1..32> (minimal big-endian),
 * contract[20], signature[65]. One value has exactly one encoding, so the decoder refuses anything else.
 */
export function encodeDeviceIdentity(identity: DeviceIdentity): Uint8Array {
  if (identity.version !== DEVICE_IDENTITY_VERSION) throw bad("version", `must be ${DEVICE_IDENTITY_VERSION}`);
  if (identity.cipherSuite !== MLS_CIPHER_SUITE_ID) throw bad("cipherSuite", `must be ${MLS_CIPHER_SUITE_ID}`);
  if (!isValidUsername(identity.username)) throw bad("username", `must be ${USERNAME_RULE}`);
  if (!Number.isInteger(identity.keyIndex) || identity.keyIndex < 0 || identity.keyIndex > 0xffffffff) {
    throw bad("keyIndex", "must be an integer in [0, 2^32)");
  }
  const chainId = chainIdBytes(identity.chainId);
  let contract: Uint8Array;
  try {
    contract = hexToBytes(getAddress(identity.contract));
  } catch {
    throw bad("contract", "must be a 20-byte address");
  }
  let signature: Uint8Array;
  try {
    signature = hexToBytes(identity.signature);
  } catch {
    throw bad("signature", "must be hex");
  }
  if (signature.length !== SIGNATURE_BYTES) throw bad("signature", `must be ${SIGNATURE_BYTES} bytes`);
  const username = new TextEncoder().encode(identity.username);
  const header = new Uint8Array(3);
  header[0] = identity.version;
  new DataView(header.buffer).setUint16(1, identity.cipherSuite);
  const keyIndex = new Uint8Array(4);
  new DataView(keyIndex.buffer).setUint32(0, identity.keyIndex);
  return concatBytes(
    header,
    Uint8Array.of(username.length),
    username,
    keyIndex,
    Uint8Array.of(chainId.length),
    chainId,
    contract,
    signature,
  );
}

/** Strict decoding: every field checked, the bad one named, no trailing bytes. */
export function decodeDeviceIdentity(bytes: Uint8Array): DeviceIdentity {
  if (!(bytes instanceof Uint8Array)) throw bad("bytes", "must be a Uint8Array");
  if (bytes.length > MAX_DEVICE_IDENTITY_BYTES) throw bad("bytes", `exceed ${MAX_DEVICE_IDENTITY_BYTES}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  const take = (field: string, n: number): Uint8Array => {
    if (offset + n > bytes.length) throw bad(field, "is truncated");
    const out = bytes.subarray(offset, offset + n);
    offset += n;
    return out;
  };
  const version = take("version", 1)[0];
  if (version !== DEVICE_IDENTITY_VERSION) throw bad("version", `is ${version}, expected ${DEVICE_IDENTITY_VERSION}`);
  take("cipherSuite", 2);
  const cipherSuite = view.getUint16(1);
  if (cipherSuite !== MLS_CIPHER_SUITE_ID) throw bad("cipherSuite", `is ${cipherSuite}, expected ${MLS_CIPHER_SUITE_ID}`);
  const usernameLength = take("username", 1)[0];
  if (usernameLength === 0 || usernameLength > USERNAME_MAX_BYTES) throw bad("username", "has a bad length");
  let username: string;
  try {
    username = new TextDecoder("utf-8", { fatal: true }).decode(take("username", usernameLength));
  } catch {
    throw bad("username", "is not UTF-8");
  }
  if (!isValidUsername(username)) throw bad("username", `must be ${USERNAME_RULE}`);
  take("keyIndex", 4);
  const keyIndex = view.getUint32(offset - 4);
  const chainIdLength = take("chainId", 1)[0];
  if (chainIdLength === 0 || chainIdLength > MAX_CHAIN_ID_BYTES) throw bad("chainId", "has a bad length");
  const chainIdRaw = take("chainId", chainIdLength);
  if (chainIdRaw[0] === 0) throw bad("chainId", "is not minimally encoded");
  const chainId = BigInt(`0x${bytesToHex(chainIdRaw)}`);
  const contract = getAddress(`0x${bytesToHex(take("contract", ADDRESS_BYTES))}`);
  const signature = `0x${bytesToHex(take("signature", SIGNATURE_BYTES))}`;
  if (offset !== bytes.length) throw bad("bytes", "have trailing data");
  return { version: DEVICE_IDENTITY_VERSION, cipherSuite, username, keyIndex, chainId, contract, signature };
}
