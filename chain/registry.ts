/**
 * The one way to reach ChatRegistry: the generated TypeChain factories, so that a change of the contract's
 * functions or errors breaks the build where a caller must adapt, not a user at run time.
 */
import { Interface, type ContractRunner } from "ethers";
// Each factory from its own file, and none of the deployable ones: a browser bundle then carries ABIs, not bytecode.
import { IAccessControl__factory } from "../typechain-types/factories/@openzeppelin/contracts/access/IAccessControl__factory";
import { ECDSA__factory } from "../typechain-types/factories/@openzeppelin/contracts/utils/cryptography/ECDSA__factory";
import { ShortStrings__factory } from "../typechain-types/factories/@openzeppelin/contracts/utils/ShortStrings__factory";
import { IChatRegistry__factory } from "../typechain-types/factories/contracts/interfaces/IChatRegistry__factory";
import type { IChatRegistry } from "../typechain-types/contracts/interfaces/IChatRegistry";

export type RegistryContract = IChatRegistry;

/** The registry's interface as callers use it (reads, writes, events), bound to `runner`. */
export function connectRegistry(address: string, runner: ContractRunner): RegistryContract {
  return IChatRegistry__factory.connect(address, runner);
}

/** ChatRegistry's typed interface: encoding, events and function names are checked at build time. */
export const registryInterface = IChatRegistry__factory.createInterface();

type ErrorNameOf<Abi extends readonly { type: string }[]> = Extract<Abi[number], { type: "error"; name: string }>["name"];

/** The name of every custom error the deployed contract can revert with, from the generated ABI. */
export type RegistryErrorName =
  | ErrorNameOf<typeof IChatRegistry__factory.abi>
  | ErrorNameOf<typeof IAccessControl__factory.abi>
  | ErrorNameOf<typeof ShortStrings__factory.abi>
  | ErrorNameOf<typeof ECDSA__factory.abi>;

/**
 * Everything the deployed contract can revert with: its interface's own errors, those of the OpenZeppelin
 * parts it inherits (access control, short strings), and the ECDSA library's, which no ABI of the contract
 * lists. A test checks this covers every error of the compiled contract.
 */
export const registryErrorInterface = new Interface(
  [IChatRegistry__factory.abi, IAccessControl__factory.abi, ShortStrings__factory.abi, ECDSA__factory.abi].flatMap((abi) => abi.filter((fragment) => fragment.type === "error")),
);
