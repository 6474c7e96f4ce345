import { getCiphersuiteFromName, getCiphersuiteImpl, type CiphersuiteImpl, type CiphersuiteName } from "ts-mls";

/**
 * The one cipher suite of the project: suite 1, the mandatory-to-implement suite of RFC 9420 §17.1
 * (X25519 HPKE, AES-128-GCM, SHA-256, Ed25519). It needs no optional peer package of ts-mls and runs in
 * a browser; one suite means no downgrade negotiation to get wrong.
 */
export const MLS_CIPHER_SUITE_NAME = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519" satisfies CiphersuiteName;
/** Its IANA code point (RFC 9420 §17.1), carried in device credentials. */
export const MLS_CIPHER_SUITE_ID = 1;

let cached: Promise<CiphersuiteImpl> | undefined;

/** The implementation of the suite, built once per process (it holds no secrets). */
export function mlsCipherSuite(): Promise<CiphersuiteImpl> {
  cached ??= getCiphersuiteImpl(getCiphersuiteFromName(MLS_CIPHER_SUITE_NAME));
  return cached;
}
