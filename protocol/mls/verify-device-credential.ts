import { getAddress, verifyMessage } from "ethers";
import type { Credential } from "ts-mls";
import { ChatError } from "../errors";
import { deviceAuthorizationText } from "./device-authorization-text";
import { decodeDeviceIdentity, type DeviceIdentity } from "./device-identity";

export interface VerifiedDevice extends DeviceIdentity {
  /** the Ethereum address that signed the authorisation (EIP-191 recovery) */
  signer: string;
}

/**
 * Decodes a device credential and recovers who authorised it, rebuilding the signed text from the leaf's
 * OWN signature key: a credential lifted onto another leaf recovers some unrelated address and fails the
 * key-book check. Also pins the deployment (chain id, contract) this client trusts. It does not consult
 * the key history; the authentication service does.
 */
export function verifyDeviceCredential(params: {
  credential: Credential;
  signaturePublicKey: Uint8Array;
  chainId: bigint;
  contract: string;
}): VerifiedDevice {
  if (params.credential.credentialType !== "basic") {
    throw new ChatError("KEY_UNVERIFIED", "device credential must be a basic credential", { field: "credentialType" });
  }
  const identity = decodeDeviceIdentity(params.credential.identity);
  if (identity.chainId !== params.chainId) {
    throw new ChatError("KEY_UNVERIFIED", "device credential names another chain", { field: "chainId" });
  }
  if (identity.contract !== getAddress(params.contract)) {
    throw new ChatError("KEY_UNVERIFIED", "device credential names another contract", { field: "contract" });
  }
  const text = deviceAuthorizationText({ ...identity, devicePublicKey: params.signaturePublicKey });
  let signer: string;
  try {
    signer = verifyMessage(text, identity.signature);
  } catch {
    throw new ChatError("INVALID_SIGNATURE", "device credential signature is malformed", { field: "signature" });
  }
  return { ...identity, signer };
}
