import type { ClientState } from "ts-mls";
import { createPendingCommit, type PendingCommit } from "./pending-commit";

/**
 * A pending commit with no proposals and a fresh update path (RFC 9420 §12.4: an empty commit carries a
 * path): new HPKE keys on our direct path, so a thief holding a copy of our old state is locked out of
 * the next epoch (post-compromise security).
 */
export async function selfUpdate(params: { state: ClientState }): Promise<PendingCommit> {
  return createPendingCommit({ state: params.state, proposals: [] });
}
