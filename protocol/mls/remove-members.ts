import type { ClientState } from "ts-mls";
import { ChatError } from "../errors";
import { createPendingCommit, type PendingCommit } from "./pending-commit";

/** A pending commit removing the leaves at `leafIndexes` (RFC 9420 §12.1.3); it also refreshes our path. */
export async function removeMembers(params: { state: ClientState; leafIndexes: number[] }): Promise<PendingCommit> {
  const own = params.state.privatePath.leafIndex;
  if (params.leafIndexes.length === 0) throw new ChatError("BAD_REQUEST", "leafIndexes must not be empty", { field: "leafIndexes" });
  for (const leafIndex of params.leafIndexes) {
    const node = params.state.ratchetTree[leafIndex * 2];
    if (!Number.isInteger(leafIndex) || leafIndex === own || node?.nodeType !== "leaf") {
      throw new ChatError("BAD_REQUEST", `leaf ${leafIndex} is not another member`, { field: "leafIndexes" });
    }
  }
  return createPendingCommit({
    state: params.state,
    proposals: params.leafIndexes.map((removed) => ({ proposalType: "remove", remove: { removed } })),
  });
}
