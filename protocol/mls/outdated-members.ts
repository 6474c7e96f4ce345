import type { AuthenticationService, ClientState } from "ts-mls";
import { groupMembers, type GroupMember } from "./group-members";

/**
 * The members whose leaf no longer passes `authService` (give it the STRICT policy): devices authorised
 * by a key that a reset replaced, or by one rotated away longer ago than the grace period. MLS checks
 * credentials only when a leaf changes (RFC 9420 §5.3.1), so the application asks after every key change
 * it sees on chain, and commits their removal; a rotated member's devices re-join with fresh leaves.
 */
export async function outdatedMembers(params: { state: ClientState; authService: AuthenticationService }): Promise<GroupMember[]> {
  const outdated: GroupMember[] = [];
  for (const member of groupMembers(params.state)) {
    const node = params.state.ratchetTree[member.leafIndex * 2];
    if (node?.nodeType !== "leaf") continue;
    if (!(await params.authService.validateCredential(node.leaf.credential, node.leaf.signaturePublicKey))) outdated.push(member);
  }
  return outdated;
}
