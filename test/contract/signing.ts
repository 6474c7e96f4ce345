/**
 * Signing helpers for the ChatRegistry tests and the gas bench. Every signature goes through
 * protocol/eip712.ts (signRegistryTypedData, registryDomain), the same code the relay and the CLI use, so
 * a drift between the protocol's EIP-712 types and the contract's type hashes fails these tests.
 * (No tests here: Hardhat loads every .ts under test/, and this file only exports helpers.)
 */
import { Wallet } from "ethers";
import {
  registryDomain,
  signRegistryTypedData,
  type CompactSignature,
  type RegistryDomain,
} from "../../protocol/eip712";
import { publicKeyOf } from "../../protocol/keys";

/** A user's identity key: secp256k1 (SEC 2), as the CLI generates it. */
export interface Identity {
  privateKey: string;
  /** 64 bytes, x || y, 0x-hex: what the contract takes and emits. */
  publicKey: string;
  /** keccak256(x || y)[12:]: what the contract stores. */
  address: string;
}

export function newIdentity(): Identity {
  const wallet = Wallet.createRandom();
  return { privateKey: wallet.privateKey, publicKey: publicKeyOf(wallet.privateKey), address: wallet.address };
}

/** The EIP-712 domain of a deployed registry (chain id and address bind every signature). */
export async function domainOf(registry: {
  getAddress(): Promise<string>;
  runner: { provider: { getNetwork(): Promise<{ chainId: bigint }> } | null } | null;
}): Promise<RegistryDomain> {
  const network = await registry.runner!.provider!.getNetwork();
  return registryDomain({ chainId: network.chainId, verifyingContract: await registry.getAddress() });
}

export function signRegister(p: {
  domain: RegistryDomain;
  signer: Identity;
  username: string;
  credentialHash: string;
  publicKey?: string;
  nonce?: bigint;
  deadline: bigint;
}): CompactSignature {
  return signRegistryTypedData({
    privateKey: p.signer.privateKey,
    domain: p.domain,
    data: {
      primaryType: "Register",
      message: {
        username: p.username,
        credentialHash: p.credentialHash,
        publicKey: p.publicKey ?? p.signer.publicKey,
        nonce: p.nonce ?? 0n,
        deadline: p.deadline,
      },
    },
  });
}

export function signRotate(p: {
  domain: RegistryDomain;
  signer: Identity;
  username: string;
  newPublicKey: string;
  nonce: bigint;
  deadline: bigint;
}): CompactSignature {
  return signRegistryTypedData({
    privateKey: p.signer.privateKey,
    domain: p.domain,
    data: {
      primaryType: "RotateKey",
      message: { username: p.username, newPublicKey: p.newPublicKey, nonce: p.nonce, deadline: p.deadline },
    },
  });
}

export function signReset(p: {
  domain: RegistryDomain;
  signer: Identity;
  username: string;
  newPublicKey: string;
  nonce: bigint;
  deadline: bigint;
}): CompactSignature {
  return signRegistryTypedData({
    privateKey: p.signer.privateKey,
    domain: p.domain,
    data: {
      primaryType: "ResetKey",
      message: { username: p.username, newPublicKey: p.newPublicKey, nonce: p.nonce, deadline: p.deadline },
    },
  });
}

export function signUpdateCredential(p: {
  domain: RegistryDomain;
  signer: Identity;
  username: string;
  credentialHash: string;
  nonce: bigint;
  deadline: bigint;
}): CompactSignature {
  return signRegistryTypedData({
    privateKey: p.signer.privateKey,
    domain: p.domain,
    data: {
      primaryType: "UpdateCredential",
      message: { username: p.username, credentialHash: p.credentialHash, nonce: p.nonce, deadline: p.deadline },
    },
  });
}

/** CancelReset, signed by the CURRENT key to drop a pending reset (protocol/eip712.ts's CANCEL_RESET_TYPES). */
export function signCancelReset(p: {
  domain: RegistryDomain;
  signer: Identity;
  username: string;
  nonce: bigint;
  deadline: bigint;
}): CompactSignature {
  return signRegistryTypedData({
    privateKey: p.signer.privateKey,
    domain: p.domain,
    data: { primaryType: "CancelReset", message: { username: p.username, nonce: p.nonce, deadline: p.deadline } },
  });
}
