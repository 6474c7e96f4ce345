/** The MLS (RFC 9420) layer of eth-chat: pure, browser-safe, over ts-mls 1.6.4. */
export { MLS_CIPHER_SUITE_ID, MLS_CIPHER_SUITE_NAME, mlsCipherSuite } from "./suite";
export { decodeDeviceIdentity, encodeDeviceIdentity, MAX_DEVICE_IDENTITY_BYTES, type DeviceIdentity } from "./device-identity";
export { deviceAuthorizationText } from "./device-authorization-text";
export { authorizeDevice, type IdentitySigner } from "./authorize-device";
export { verifyDeviceCredential, type VerifiedDevice } from "./verify-device-credential";
export type { KeyBook, KeyRecord } from "./key-book";
export { memoryKeyBook } from "./memory-key-book";
export {
  deviceAuthenticationService,
  ROTATION_GRACE_SECONDS,
  type AuthenticationPolicy,
  type DeviceAuthenticationOptions,
} from "./authentication-service";
export { mlsClientConfig, RETAINED_EPOCHS, MAX_KEY_PACKAGE_LIFETIME_SECONDS } from "./client-config";
export { generateDeviceSignatureKey } from "./device-signature-key";
export { generateDeviceKeyPackage } from "./key-package";
export { createMlsGroup, GROUP_ID_BYTES } from "./create-group";
export { acceptPendingCommit, createPendingCommit, rejectPendingCommit, type PendingCommit } from "./pending-commit";
export { addMembers, MAX_ADDS_PER_COMMIT } from "./add-members";
export { removeMembers } from "./remove-members";
export { replaceMembers } from "./replace-members";
export { ownLeafCarries, reauthorizeLeaf } from "./reauthorize-leaf";
export { snapshotKeyBook } from "./snapshot-key-book";
export { selfUpdate } from "./self-update";
export { joinFromWelcome } from "./join-from-welcome";
export { decodeMlsMessageBytes, MAX_MLS_MESSAGE_BYTES } from "./decode-mls-message";
export {
  decodeApplicationPayload,
  encodeApplicationPayload,
  newPayloadId,
  MAX_BODY_BYTES,
  MAX_GROUP_NAME_BYTES,
  PAYLOAD_KINDS,
  type ApplicationPayload,
  type PayloadKind,
} from "./application-payload";
export { sealApplicationMessage } from "./seal-application-message";
export { processIncomingMessage, type IncomingResult } from "./process-incoming-message";
export { groupMembers, memberAtLeaf, type GroupMember } from "./group-members";
export { outdatedMembers } from "./outdated-members";
export { createEpochBuffer, type EpochBuffer } from "./epoch-buffer";
export { openGroupState, sealGroupState } from "./group-state-seal";
