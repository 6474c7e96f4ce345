import { getAddress } from "ethers";
import { bytesToHex } from "./bytes";
import { MLS_CIPHER_SUITE_ID, MLS_CIPHER_SUITE_NAME } from "./suite";

/**
 * The text the on-chain identity key signs with EIP-191 personal_sign (`"\x19Ethereum Signed
 * Message:\n" + len + text`) to authorise one device's Ed25519 MLS signature key.
 *
 * Why EIP-191 and not EIP-712: the authorisation is read by the user in any wallet (a hardware or browser
 * wallet shows this text verbatim), and the contract never verifies it, so EIP-712's on-chain struct
 * hashing buys nothing; the replay domain that EIP-712 would carry (chain id, contract) is written into
 * the text itself, with the suite, the username and the key index, each on a labelled line. The prefix
 * line keeps it from ever parsing as an envelope or a registry signature.
 */
export function deviceAuthorizationText(params: {
  username: string;
  keyIndex: number;
  chainId: bigint;
  contract: string;
  cipherSuite: number;
  /** the device's Ed25519 public key: the leaf's signature_key (RFC 9420 §7.2) */
  devicePublicKey: Uint8Array;
}): string {
  const suiteName = params.cipherSuite === MLS_CIPHER_SUITE_ID ? MLS_CIPHER_SUITE_NAME : "unknown";
  return [
    "eth-chat: authorise this device to send and receive messages as me",
    "version: 1",
    `username: ${params.username}`,
    `identity key index: ${params.keyIndex}`,
    `chain id: ${params.chainId.toString()}`,
    `contract: ${getAddress(params.contract)}`,
    `cipher suite: ${params.cipherSuite} (${suiteName})`,
    `device key (Ed25519): ${bytesToHex(params.devicePublicKey)}`,
  ].join("\n");
}
