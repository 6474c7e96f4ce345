/**
 * The ChatRegistry deployments a client trusts without being told, by chain id, as ethers knows the ENS
 * registry of each network: the client picks its contract from its own side, never from the relay it talks
 * to (a relay's operator could otherwise name a registry where it controls the keys).
 *
 * Pure data, safe in a browser. There is no public deployment yet, so the list is empty. To add one, deploy
 * ChatRegistry from a tagged commit (README, Deployment), check its runtime code against that commit's
 * compiled contract (`chat status --contract ADDRESS` does), and add a line here in a reviewed change:
 *
 *   "11155111": { contractAddress: "0x…", deployBlock: 1234567, note: "Sepolia, tag v1.0.0" },
 *
 * Keys are decimal chain ids (chain ids may exceed 2^53); addresses are lowercase 0x hex.
 */
export interface KnownDeployment {
  /** lowercase 0x hex, 20 bytes */
  contractAddress: string;
  /** the block of the deployment transaction: where a reader starts scanning events */
  deployBlock: number;
  /** what it is, for people reading the list */
  note: string;
}

export const KNOWN_DEPLOYMENTS: Readonly<Record<string, KnownDeployment>> = Object.freeze({});

/** The known deployment on `chainId`, if any. */
export function knownDeployment(chainId: bigint, list: Readonly<Record<string, KnownDeployment>> = KNOWN_DEPLOYMENTS): KnownDeployment | undefined {
  return Object.prototype.hasOwnProperty.call(list, chainId.toString()) ? list[chainId.toString()] : undefined;
}
