/** Byte helpers for the MLS layer: the shared protocol/ ones (Uint8Array only, so that it runs in a browser). */
export { bytesEqual, bytesToHex, concatBytes, hexToBytes, randomBytes } from "../bytes";
