import type { ClientState, KeyPackage } from "ts-mls";
import { ChatError } from "../errors";
import { MAX_ADDS_PER_COMMIT } from "./add-members";
import { createPendingCommit, type PendingCommit } from "./pending-commit";

/**
 * One pending commit that removes the leaves at `removeLeafIndexes` and adds the devices of
 * `addKeyPackages` (RFC 9420 §12.2: a commit may carry removes and adds together; removes are applied
 * first, so an added device may take a freed leaf). Used when a user's key changed on chain: their
 * devices authorised by the replaced key leave, and their devices authorised by the current key join,
 * in a single epoch, so there is no epoch in which the user is absent or present twice. Key packages are
 * checked by the strict authentication service of `state` while the commit is built.
 */
export async function replaceMembers(params: { state: ClientState; removeLeafIndexes: number[]; addKeyPackages: KeyPackage[] }): Promise<PendingCommit> {
  const { state, removeLeafIndexes, addKeyPackages } = params;
  if (!Array.isArray(removeLeafIndexes) || !Array.isArray(addKeyPackages)) {
    throw new ChatError("BAD_REQUEST", "removeLeafIndexes and addKeyPackages must be arrays", { field: "removeLeafIndexes" });
  }
  if (removeLeafIndexes.length === 0 && addKeyPackages.length === 0) {
    throw new ChatError("BAD_REQUEST", "nothing to remove or add", { field: "removeLeafIndexes" });
  }
  if (addKeyPackages.length > MAX_ADDS_PER_COMMIT) {
    throw new ChatError("BAD_REQUEST", `at most ${MAX_ADDS_PER_COMMIT} key packages per commit`, { field: "addKeyPackages" });
  }
  const own = state.privatePath.leafIndex;
  if (new Set(removeLeafIndexes).size !== removeLeafIndexes.length) {
    throw new ChatError("BAD_REQUEST", "a leaf is named twice", { field: "removeLeafIndexes" });
  }
  for (const leafIndex of removeLeafIndexes) {
    if (!Number.isInteger(leafIndex) || leafIndex === own || state.ratchetTree[leafIndex * 2]?.nodeType !== "leaf") {
      throw new ChatError("BAD_REQUEST", `leaf ${leafIndex} is not another member`, { field: "removeLeafIndexes" });
    }
  }
  return createPendingCommit({
    state,
    proposals: [
      ...removeLeafIndexes.map((removed) => ({ proposalType: "remove" as const, remove: { removed } })),
      ...addKeyPackages.map((keyPackage) => ({ proposalType: "add" as const, add: { keyPackage } })),
    ],
  });
}
