/**
 * The one way to reach ChatRegistry: the generated TypeChain factories, so that a change of the contract's
 * functions or errors breaks the build where a caller must adapt, not a user at run time.
 */
import { Interface, type ContractRunner } from "ethers";
import { ChatRegistry__factory, ECDSA__factory, IChatRegistry__factory, type IChatRegistry } from "../typechain-types";

export type RegistryContract = IChatRegistry;

/** The registry's interface as callers use it (reads, writes, events), bound to `runner`. */
export function connectRegistry(address: string, runner: ContractRunner): RegistryContract {
  return IChatRegistry__factory.connect(address, runner);
}

/** ChatRegistry's typed interface: encoding, events and function names are checked at build time. */
export const registryInterface = ChatRegistry__factory.createInterface();

type ErrorNameOf<Abi extends readonly { type: string }[]> = Extract<Abi[number], { type: "error"; name: string }>["name"];

/** The name of every custom error the deployed contract can revert with, from the generated ABI. */
export type RegistryErrorName = ErrorNameOf<typeof ChatRegistry__factory.abi> | ErrorNameOf<typeof ECDSA__factory.abi>;

/**
 * Everything the deployed contract can revert with: ChatRegistry's ABI (its own errors and those of the
 * OpenZeppelin contracts it inherits) plus the ECDSA library's errors, which the ABI does not list.
 */
export const registryErrorInterface = new Interface([
  ...ChatRegistry__factory.abi.filter((fragment) => fragment.type === "error"),
  ...ECDSA__factory.abi.filter((fragment) => fragment.type === "error"),
]);
