import type { ClientState, KeyPackage } from "ts-mls";
import { ChatError } from "../errors";
import { createPendingCommit, type PendingCommit } from "./pending-commit";

/** Upper bound on one add commit, so one call cannot build an unbounded Welcome. */
export const MAX_ADDS_PER_COMMIT = 200;

/**
 * A pending commit adding the devices of `keyPackages` (RFC 9420 §12.1.1), and their Welcome. Each key
 * package is checked by the authentication service of `state` (strict) while the commit is built.
 */
export async function addMembers(params: { state: ClientState; keyPackages: KeyPackage[] }): Promise<PendingCommit> {
  if (params.keyPackages.length === 0 || params.keyPackages.length > MAX_ADDS_PER_COMMIT) {
    throw new ChatError("BAD_REQUEST", `keyPackages must hold 1 to ${MAX_ADDS_PER_COMMIT} packages`, { field: "keyPackages" });
  }
  return createPendingCommit({
    state: params.state,
    proposals: params.keyPackages.map((keyPackage) => ({ proposalType: "add", add: { keyPackage } })),
  });
}
