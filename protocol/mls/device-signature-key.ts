import { mlsCipherSuite } from "./suite";

/** A fresh Ed25519 signature key pair for one device (RFC 9420 §5.1.2), never shared between devices. */
export async function generateDeviceSignatureKey(): Promise<{ publicKey: Uint8Array; signKey: Uint8Array }> {
  return (await mlsCipherSuite()).signature.keygen();
}
