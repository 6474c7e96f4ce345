import type { ClientState, RatchetTree } from "ts-mls";
import { decodeDeviceIdentity } from "./device-identity";

export interface GroupMember {
  leafIndex: number;
  username: string;
  /** the on-chain key index that authorised this device */
  keyIndex: number;
  /** the device's Ed25519 key (the leaf's signature_key) */
  signaturePublicKey: Uint8Array;
}

/** The member at one leaf of a tree, or undefined for a blank leaf (RFC 9420 §7.8: leaf i is node 2i). */
export function memberAtLeaf(tree: RatchetTree, leafIndex: number): GroupMember | undefined {
  const node = tree[leafIndex * 2];
  if (node?.nodeType !== "leaf" || node.leaf.credential.credentialType !== "basic") return undefined;
  const identity = decodeDeviceIdentity(node.leaf.credential.identity);
  return { leafIndex, username: identity.username, keyIndex: identity.keyIndex, signaturePublicKey: node.leaf.signaturePublicKey };
}

/** Every member device of the group's current epoch, in leaf order. */
export function groupMembers(state: ClientState): GroupMember[] {
  const members: GroupMember[] = [];
  for (let leaf = 0; leaf * 2 < state.ratchetTree.length; leaf++) {
    const member = memberAtLeaf(state.ratchetTree, leaf);
    if (member) members.push(member);
  }
  return members;
}
