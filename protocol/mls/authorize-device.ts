import type { CredentialBasic } from "ts-mls";
import { ChatError } from "../errors";
import { deviceAuthorizationText } from "./device-authorization-text";
import { encodeDeviceIdentity } from "./device-identity";
import { MLS_CIPHER_SUITE_ID } from "./suite";

/** Signs a text with EIP-191 personal_sign, as ethers' `Wallet.signMessage` does; returns 65-byte 0x-hex. */
export type IdentitySigner = (text: string) => Promise<string>;

const ED25519_PUBLIC_KEY_BYTES = 32;

/**
 * Builds the MLS basic credential of one device: the on-chain identity key (through `sign`, so the
 * private key never enters protocol code) authorises the device's Ed25519 signature key.
 */
export async function authorizeDevice(params: {
  username: string;
  keyIndex: number;
  chainId: bigint;
  contract: string;
  devicePublicKey: Uint8Array;
  sign: IdentitySigner;
}): Promise<CredentialBasic> {
  if (!(params.devicePublicKey instanceof Uint8Array) || params.devicePublicKey.length !== ED25519_PUBLIC_KEY_BYTES) {
    throw new ChatError("INVALID_PUBLIC_KEY", "devicePublicKey must be a 32-byte Ed25519 key", { field: "devicePublicKey" });
  }
  const fields = {
    username: params.username,
    keyIndex: params.keyIndex,
    chainId: params.chainId,
    contract: params.contract,
    cipherSuite: MLS_CIPHER_SUITE_ID,
  };
  // Encode once with a placeholder first so that bad fields fail before anything is signed.
  encodeDeviceIdentity({ version: 1, ...fields, signature: `0x${"00".repeat(65)}` });
  const signature = await params.sign(deviceAuthorizationText({ ...fields, devicePublicKey: params.devicePublicKey }));
  return { credentialType: "basic", identity: encodeDeviceIdentity({ version: 1, ...fields, signature }) };
}
