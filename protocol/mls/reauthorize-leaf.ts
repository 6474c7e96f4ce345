import type { ClientState, CredentialBasic } from "ts-mls";
import { ChatError } from "../errors";
import { bytesEqual } from "./bytes";
import { decodeDeviceIdentity } from "./device-identity";
import { memberAtLeaf } from "./group-members";
import { createPendingCommit, type PendingCommit } from "./pending-commit";

/**
 * A pending commit whose update path carries this device's leaf with a new credential (RFC 9420 §12.4.1:
 * the committer's path begins with a fresh LeafNode of source `commit`; §5.3.3 lets a member change its
 * credential that way as long as it still names the same client). Used after the user's identity key was
 * rotated: the same Ed25519 signature key, now authorised by the new key, so members checking leaves
 * strictly keep accepting this device once the old key's grace has passed.
 *
 * Why a copy of the state with the credential swapped in: ts-mls 1.6.4 builds the path's leaf from the
 * committer's leaf in the tree (credential and signature key included) and signs it with the state's
 * signature key, and has no option to pass another credential. The copy only changes what that new,
 * freshly signed leaf carries; the commit itself is still signed with the unchanged key of the current
 * leaf, and `current` stays the untouched state. A new signature key is not possible this way (the
 * content and the new leaf would need different keys), so the device keeps its Ed25519 key.
 */
export async function reauthorizeLeaf(params: { state: ClientState; credential: CredentialBasic }): Promise<PendingCommit> {
  const { state, credential } = params;
  if (credential?.credentialType !== "basic" || !(credential.identity instanceof Uint8Array)) {
    throw new ChatError("BAD_REQUEST", "credential must be a basic credential", { field: "credential" });
  }
  const leafIndex = state.privatePath.leafIndex;
  const node = state.ratchetTree[leafIndex * 2];
  const own = memberAtLeaf(state.ratchetTree, leafIndex);
  if (node?.nodeType !== "leaf" || !own) throw new ChatError("BAD_REQUEST", "this device has no leaf in the group", { field: "state" });
  const identity = decodeDeviceIdentity(credential.identity);
  if (identity.username !== own.username) {
    throw new ChatError("KEY_MISMATCH", `a new credential must name the same user (${own.username}), not ${identity.username}`, { field: "credential" });
  }
  if (node.leaf.credential.credentialType === "basic" && bytesEqual(node.leaf.credential.identity, credential.identity)) {
    throw new ChatError("BAD_REQUEST", "the leaf already carries this credential", { field: "credential" });
  }
  const ratchetTree = state.ratchetTree.slice();
  ratchetTree[leafIndex * 2] = { nodeType: "leaf", leaf: { ...node.leaf, credential } };
  const pending = await createPendingCommit({ state: { ...state, ratchetTree }, proposals: [] });
  return { ...pending, current: state };
}

/** Whether this device's own leaf in `state` carries exactly `credential`. */
export function ownLeafCarries(state: ClientState, credential: CredentialBasic): boolean {
  const node = state.ratchetTree[state.privatePath.leafIndex * 2];
  return node?.nodeType === "leaf" && node.leaf.credential.credentialType === "basic" && bytesEqual(node.leaf.credential.identity, credential.identity);
}
