import { defaultCapabilities, generateKeyPackageWithKey, type Credential, type KeyPackage, type PrivateKeyPackage } from "ts-mls";
import { ChatError } from "../errors";
import { MAX_KEY_PACKAGE_LIFETIME_SECONDS } from "./client-config";
import { mlsCipherSuite } from "./suite";

/** Allowance for clocks behind ours, so a fresh package is not "not yet valid" elsewhere. */
const CLOCK_SKEW_SECONDS = 300n;

/**
 * A key package of this device (RFC 9420 §10) with an explicit lifetime: the library tracks no reuse,
 * so the lifetime bounds how long a leaked or last-resort package can be used to add this device.
 * The credential must have been authorised for `signatureKey.publicKey` (authorizeDevice).
 */
export async function generateDeviceKeyPackage(params: {
  credential: Credential;
  signatureKey: { publicKey: Uint8Array; signKey: Uint8Array };
  lifetimeSeconds: number;
  /** Unix seconds */
  now?: number;
}): Promise<{ publicPackage: KeyPackage; privatePackage: PrivateKeyPackage }> {
  const lifetime = BigInt(Math.floor(params.lifetimeSeconds));
  if (!Number.isFinite(params.lifetimeSeconds) || lifetime <= 0n || lifetime > MAX_KEY_PACKAGE_LIFETIME_SECONDS - CLOCK_SKEW_SECONDS) {
    throw new ChatError("BAD_REQUEST", "lifetimeSeconds must be positive and at most about 90 days", { field: "lifetimeSeconds" });
  }
  const now = BigInt(Math.floor(params.now ?? Date.now() / 1000));
  const cs = await mlsCipherSuite();
  return generateKeyPackageWithKey(
    params.credential,
    defaultCapabilities(),
    { notBefore: now - CLOCK_SKEW_SECONDS, notAfter: now + lifetime },
    [],
    params.signatureKey,
    cs,
  );
}
