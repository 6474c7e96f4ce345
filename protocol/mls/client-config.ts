import {
  defaultKeyPackageEqualityConfig,
  defaultLifetimeConfig,
  defaultPaddingConfig,
  type AuthenticationService,
  type ClientConfig,
} from "ts-mls";

/**
 * How many past epochs' receiver secrets a member keeps (RFC 9420 §14 leaves it to the application).
 * Two lets a message that raced a commit still open; anything older is deleted, which is what gives
 * forward secrecy across epochs.
 */
export const RETAINED_EPOCHS = 2;
/** Out-of-order messages within an epoch: skipped generations kept per sender (RFC 9420 §9.2). */
export const RETAINED_GENERATIONS = 10;
/** Cap on how far one sender's ratchet is advanced for a single message, against a forced long ratchet. */
export const MAX_FORWARD_RATCHET_STEPS = 1000;
/** Longest key package lifetime accepted or issued (RFC 9420 §10: lifetimes bound key package reuse). */
export const MAX_KEY_PACKAGE_LIFETIME_SECONDS = 90n * 24n * 3600n;

/**
 * The ts-mls client configuration of this project. It is not part of the saved group state: re-attach
 * it after `decodeGroupState` (see openGroupState).
 */
export function mlsClientConfig(authService: AuthenticationService): ClientConfig {
  return {
    keyRetentionConfig: {
      retainKeysForEpochs: RETAINED_EPOCHS,
      retainKeysForGenerations: RETAINED_GENERATIONS,
      maximumForwardRatchetSteps: MAX_FORWARD_RATCHET_STEPS,
    },
    // Lifetimes are checked by the committer when it adds a key package; members' leaves in a joined
    // tree may legitimately be older than their packages' lifetime (RFC 9420 §7.2), so not on receive.
    lifetimeConfig: { ...defaultLifetimeConfig, maximumTotalLifetime: MAX_KEY_PACKAGE_LIFETIME_SECONDS },
    keyPackageEqualityConfig: defaultKeyPackageEqualityConfig,
    paddingConfig: defaultPaddingConfig,
    authService,
  };
}
