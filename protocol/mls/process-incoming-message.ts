import { emptyPskIndex, processPrivateMessage, zeroOutUint8Array, type ClientState } from "ts-mls";
import { decryptSenderData } from "ts-mls/privateMessage.js";
import { ChatError } from "../errors";
import { decodeApplicationPayload, type ApplicationPayload } from "./application-payload";
import { bytesEqual } from "./bytes";
import { decodeMlsMessageBytes } from "./decode-mls-message";
import { memberAtLeaf, type GroupMember } from "./group-members";
import { mlsCipherSuite } from "./suite";

export type IncomingResult =
  | { kind: "application"; state: ClientState; sender: GroupMember; payload: ApplicationPayload }
  | { kind: "commit"; state: ClientState; sender: GroupMember; epoch: bigint }
  /** a commit that removed this device: the group is over for it; `state` can no longer send or read */
  | { kind: "removed"; state: ClientState; sender: GroupMember }
  /** for a later epoch than ours: hold it (EpochBuffer) until the commit that leads there is processed */
  | { kind: "future-epoch"; epoch: bigint };

/**
 * Processes one PrivateMessage of the group: an application message or a commit from another member
 * (RFC 9420 §6.3, §12.4.2). Returns who sent it, read from the sender data's leaf index (§6.3.2) in the
 * tree of the message's epoch; the library's signature check then ties the content to that leaf's key.
 * Public messages are refused: this project sends every handshake encrypted, so the relay sees no
 * membership changes in the clear.
 */
export async function processIncomingMessage(params: { state: ClientState; message: Uint8Array }): Promise<IncomingResult> {
  const { state } = params;
  const decoded = decodeMlsMessageBytes(params.message);
  if (decoded.wireformat !== "mls_private_message") {
    throw new ChatError("ENVELOPE_INVALID", `expected a private message, got ${decoded.wireformat}`, { field: "wireformat" });
  }
  const pm = decoded.privateMessage;
  if (!bytesEqual(pm.groupId, state.groupContext.groupId)) {
    throw new ChatError("ENVELOPE_INVALID", "message is for another group", { field: "groupId" });
  }
  if (pm.contentType === "proposal") {
    // This project commits its proposals inline and never sends them alone.
    throw new ChatError("ENVELOPE_INVALID", "standalone proposals are not accepted", { field: "contentType" });
  }
  const epoch = state.groupContext.epoch;
  if (pm.epoch > epoch) return { kind: "future-epoch", epoch: pm.epoch };

  const past = pm.epoch < epoch ? state.historicalReceiverData.get(pm.epoch) : undefined;
  if (pm.epoch < epoch && !past) {
    throw new ChatError("ENVELOPE_INVALID", `epoch ${pm.epoch} is no longer readable (keys erased)`, { field: "epoch" });
  }
  const cs = await mlsCipherSuite();
  const senderDataSecret = past ? past.senderDataSecret : state.keySchedule.senderDataSecret;
  const tree = past ? past.ratchetTree : state.ratchetTree;
  let senderData;
  try {
    senderData = await decryptSenderData(pm, senderDataSecret, cs);
  } catch {
    senderData = undefined;
  }
  const sender = senderData ? memberAtLeaf(tree, senderData.leafIndex) : undefined;
  if (!sender) throw new ChatError("ENVELOPE_INVALID", "message sender is not a member", { field: "senderData" });

  let result;
  try {
    result = await processPrivateMessage(state, pm, emptyPskIndex, cs);
  } catch (error) {
    throw new ChatError("ENVELOPE_INVALID", `message refused: ${(error as Error).message}`, { field: "message" });
  }
  if (result.kind !== "applicationMessage") {
    // A commit's path may carry the committer's leaf with a new credential (a re-authorisation after a
    // key rotation); RFC 9420 §5.3.3 leaves it to the application to check it is still the same client.
    // Checked before anything is erased, so a refusal leaves the old state usable.
    const after = memberAtLeaf(result.newState.ratchetTree, sender.leafIndex);
    if (after && after.username !== sender.username) {
      throw new ChatError("KEY_MISMATCH", `a commit by ${sender.username} turned its leaf into ${after.username}'s`, { field: "message" });
    }
  }
  for (const secret of result.consumed) zeroOutUint8Array(secret);
  if (result.kind === "applicationMessage") {
    return { kind: "application", state: result.newState, sender, payload: decodeApplicationPayload(result.message) };
  }
  if (result.newState.groupActiveState.kind === "removedFromGroup") return { kind: "removed", state: result.newState, sender };
  return { kind: "commit", state: result.newState, sender, epoch: result.newState.groupContext.epoch };
}
