import type { AuthenticationService, Credential } from "ts-mls";
import { isChatError } from "../errors";
import { bytesToHex } from "./bytes";
import type { KeyBook } from "./key-book";
import { verifyDeviceCredential, type VerifiedDevice } from "./verify-device-credential";

/** Recovered signers remembered per service; a join re-checks every leaf of the tree, mostly known ones. */
const MAX_REMEMBERED_DEVICES = 4096;

/**
 * STRICT for what a member is about to trust for the future (key packages it adds, commit paths and
 * updates it processes): the authorising key must be the user's current key, or the one just replaced by
 * a `rotated` record within the grace period. Never a key replaced by a `reset` (a reset means the key
 * may be in someone else's hands).
 * LENIENT for joining (validating every leaf of a Welcome's tree, RFC 9420 §12.4.3.1): any key in the
 * user's history with a valid signature, since other members' leaves may legitimately predate their
 * last rotation; the application then removes out-of-date leaves.
 */
export type AuthenticationPolicy = "strict" | "lenient";

/** How long a key replaced by a rotation still authorises new leaves: commits in flight at the rotation. */
export const ROTATION_GRACE_SECONDS = 60;

export interface DeviceAuthenticationOptions {
  keyBook: KeyBook;
  policy: AuthenticationPolicy;
  chainId: bigint;
  contract: string;
  graceSeconds?: number;
  /** Unix seconds; injectable for tests */
  now?: () => number;
  /**
   * Unix seconds at which to judge a strict check instead of now, when it returns a number: a commit read
   * from the log is judged at the time the relay received it, so that a commit made while its key was
   * current still applies after a later reset or rotation (every member must apply the same log, or the
   * group stalls at that entry). The time is the relay's word, as for envelope v1.
   */
  judgedAt?: () => number | undefined;
  /** Called with the reason when a credential is refused (the library only sees a boolean). */
  onRefused?: (reason: { code: string; message: string }) => void;
}

/**
 * ts-mls's AuthenticationService (RFC 9420 §5.3.1: the application validates every credential it meets)
 * over the on-chain key history.
 */
export function deviceAuthenticationService(options: DeviceAuthenticationOptions): AuthenticationService {
  const grace = options.graceSeconds ?? ROTATION_GRACE_SECONDS;
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const refuse = (code: string, message: string): false => {
    options.onRefused?.({ code, message });
    return false;
  };
  // Signature recovery (secp256k1, about 1 ms) is a pure function of the credential and the leaf key, so
  // its result is remembered; the key-book check below is not, since the chain moves on.
  const recovered = new Map<string, VerifiedDevice>();
  return {
    async validateCredential(credential: Credential, signaturePublicKey: Uint8Array): Promise<boolean> {
      const memoKey =
        credential.credentialType === "basic" ? `${bytesToHex(credential.identity)}:${bytesToHex(signaturePublicKey)}` : undefined;
      let device = memoKey === undefined ? undefined : recovered.get(memoKey);
      if (!device) {
        try {
          device = verifyDeviceCredential({ credential, signaturePublicKey, chainId: options.chainId, contract: options.contract });
        } catch (error) {
          if (isChatError(error)) return refuse(error.code, error.message);
          throw error;
        }
        if (recovered.size >= MAX_REMEMBERED_DEVICES) recovered.clear();
        if (memoKey !== undefined) recovered.set(memoKey, device);
      }
      const record = await options.keyBook.keyRecord(device.username, device.keyIndex);
      if (!record) return refuse("KEY_UNVERIFIED", `no key ${device.keyIndex} for ${device.username}`);
      if (record.address.toLowerCase() !== device.signer.toLowerCase()) {
        return refuse("KEY_MISMATCH", `device of ${device.username} not signed by key ${device.keyIndex}`);
      }
      if (options.policy === "lenient") return true;
      const at = options.judgedAt?.();
      if (at !== undefined) {
        const successor = await options.keyBook.keyRecord(device.username, device.keyIndex + 1);
        if (!successor || successor.timestamp > at) return true;
        if (successor.kind === "rotated" && at <= successor.timestamp + grace) return true;
        return refuse("KEY_UNVERIFIED", `key ${device.keyIndex} of ${device.username} was replaced (${successor.kind}) before the relay received this`);
      }
      const count = await options.keyBook.keyCount(device.username);
      if (device.keyIndex === count - 1) return true;
      if (device.keyIndex === count - 2) {
        const successor = await options.keyBook.keyRecord(device.username, count - 1);
        if (successor?.kind === "rotated" && now() <= successor.timestamp + grace) return true;
        if (successor?.kind === "reset") return refuse("KEY_UNVERIFIED", `key ${device.keyIndex} of ${device.username} was reset`);
      }
      return refuse("KEY_UNVERIFIED", `key ${device.keyIndex} of ${device.username} is no longer current`);
    },
  };
}
