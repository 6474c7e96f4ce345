import { createCommit, encodeMlsMessage, zeroOutUint8Array, type ClientState, type Proposal } from "ts-mls";
import { mlsCipherSuite } from "./suite";

/**
 * A commit this device made but the Delivery Service has not accepted yet (RFC 9420 §14: a member must
 * not move to the new epoch until its commit is confirmed, since another commit of the same epoch may
 * win). `current` stays the state to use; `next` is adopted only on acceptance.
 */
export interface PendingCommit {
  readonly current: ClientState;
  readonly next: ClientState;
  /** the encoded MLSMessage (a PrivateMessage commit) to send to the group */
  readonly commit: Uint8Array;
  /** the encoded MLSMessage Welcome for added members, if any */
  readonly welcome: Uint8Array | undefined;
  /** the epoch the commit is for (the Delivery Service accepts one commit per epoch) */
  readonly epoch: bigint;
  /** secrets of `current` the commit used; zeroed only once `current` is no longer needed */
  readonly consumed: readonly Uint8Array[];
}

/**
 * Builds a commit over `proposals` without touching `state`. The Welcome carries the ratchet tree
 * (RFC 9420 §12.4.3.3) so that a joiner needs nothing from the relay but the Welcome.
 */
export async function createPendingCommit(params: { state: ClientState; proposals: Proposal[] }): Promise<PendingCommit> {
  const cs = await mlsCipherSuite();
  const result = await createCommit(
    { state: params.state, cipherSuite: cs },
    { extraProposals: params.proposals, ratchetTreeExtension: true },
  );
  return {
    current: params.state,
    next: result.newState,
    commit: encodeMlsMessage(result.commit),
    welcome: result.welcome ? encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome: result.welcome }) : undefined,
    epoch: params.state.groupContext.epoch,
    consumed: result.consumed,
  };
}

/** The relay accepted the commit: move to the new epoch and only now erase the old epoch's used secrets. */
export function acceptPendingCommit(pending: PendingCommit): ClientState {
  for (const secret of pending.consumed) zeroOutUint8Array(secret);
  return pending.next;
}

/**
 * The relay refused the commit (another one won the epoch): keep the old state intact, process the
 * winning commit, then rebuild the change if it is still wanted.
 */
export function rejectPendingCommit(pending: PendingCommit): ClientState {
  return pending.current;
}
