/**
 * Registered users for the relay benchmarks: the relay accepts a session token only for a user whose
 * current key index and credential hash on the chain match the token, so every benchmark user is
 * registered on ChatRegistry first, then gets a token bound to what was registered.
 *
 * Registrations go straight to the contract with the relayer's key (no HTTP, no password hashing:
 * the benchmarks measure messaging, not sign-up), signed locally with explicit nonces and fixed gas
 * so that many are in flight at once; call this before the relay starts, so that the relayer's
 * nonces are the benchmark's alone.
 */
import { randomBytes } from "node:crypto";
import { Wallet, hexlify } from "ethers";
import { connectRpc } from "../chain/rpc";
import { registryDomain, signRegistryTypedData } from "../protocol/eip712";
import { publicKeyOf } from "../protocol/keys";
import { issueSessionToken } from "../relay/sessions";
import { ChatRegistry__factory } from "../typechain-types";
import { log } from "./lib";

export interface BenchUser {
  username: string;
  /** bytes32 0x-hex as registered: random, since no benchmark logs in with a password */
  credentialHash: string;
  /** the key index a fresh registration has */
  keyIndex: number;
}

/** Comfortably above register's gas with a 32-byte username (see bench:gas), so no estimate per transaction. */
const REGISTER_GAS_LIMIT = 300_000n;

/**
 * Registers `usernames` on the registry at `contractAddress` (the relayer key must hold the relayer
 * role) and resolves once every registration is mined and succeeded, with the users and the block of
 * the last one (what the relay's cache must have synced before it knows them all).
 */
export async function registerBenchUsers(params: {
  rpcUrl: string;
  contractAddress: string;
  relayerKey: string;
  usernames: string[];
  /** transactions in flight at once */
  concurrency?: number;
}): Promise<{ users: Map<string, BenchUser>; lastBlock: number; seconds: number }> {
  const started = Date.now();
  // Batched JSON-RPC: hundreds of sends and receipt reads travel in a few HTTP requests.
  const { chainId, provider } = await connectRpc(params.rpcUrl, { batchMaxCount: 100 });
  try {
    const relayer = new Wallet(params.relayerKey, provider);
    const registry = ChatRegistry__factory.connect(params.contractAddress, relayer);
    const domain = registryDomain({ chainId, verifyingContract: params.contractAddress });
    const head = await provider.getBlock("latest");
    const deadline = BigInt(head!.timestamp) + 3600n;
    const fees = await provider.getFeeData();
    const maxFeePerGas = 2n * (fees.maxFeePerGas ?? 10n ** 10n);
    const maxPriorityFeePerGas = fees.maxPriorityFeePerGas ?? 10n ** 9n;
    let nonce = await provider.getTransactionCount(relayer.address, "pending");

    const users = new Map<string, BenchUser>();
    const hashes: string[] = new Array(params.usernames.length);
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(params.concurrency ?? 64, params.usernames.length) }, async () => {
        while (next < params.usernames.length) {
          const i = next++;
          const username = params.usernames[i];
          const identityKey = hexlify(randomBytes(32));
          const publicKey = publicKeyOf(identityKey);
          const credentialHash = hexlify(randomBytes(32));
          const signature = signRegistryTypedData({
            privateKey: identityKey,
            domain,
            data: { primaryType: "Register", message: { username, credentialHash, publicKey, nonce: 0n, deadline } },
          });
          const tx = await registry.register(username, credentialHash, publicKey, deadline, signature, {
            nonce: nonce++,
            gasLimit: REGISTER_GAS_LIMIT,
            maxFeePerGas,
            maxPriorityFeePerGas,
            chainId,
            type: 2,
          });
          hashes[i] = tx.hash;
          users.set(username, { username, credentialHash, keyIndex: 0 });
        }
      }),
    );
    let lastBlock = 0;
    for (let i = 0; i < hashes.length; i += 100) {
      const receipts = await Promise.all(hashes.slice(i, i + 100).map((hash) => provider.waitForTransaction(hash, 1, 60_000)));
      receipts.forEach((receipt, j) => {
        if (!receipt || receipt.status !== 1) throw new Error(`registering ${params.usernames[i + j]} failed (transaction ${hashes[i + j]})`);
        lastBlock = Math.max(lastBlock, receipt.blockNumber);
      });
    }
    const seconds = (Date.now() - started) / 1000;
    log(`${params.usernames.length} users registered on the chain in ${seconds.toFixed(1)} s (last block ${lastBlock})`);
    return { users, lastBlock, seconds };
  } finally {
    provider.destroy();
  }
}

/** A session token for a registered benchmark user, bound to its registered key index and credential. */
export function benchSessionToken(secret: Uint8Array, user: BenchUser): string {
  return issueSessionToken({ secret, username: user.username, keyIndex: user.keyIndex, credentialHash: user.credentialHash, now: Date.now() }).token;
}

/**
 * Resolves once the relay's chain cache has synced `block` (GET /healthz reports its synced block),
 * so that the measured connections find their users in the cache instead of asking the chain.
 */
export async function waitForRelaySync(getHealth: () => Promise<{ sync?: { syncedBlock?: number } }>, block: number, timeoutMs = 120_000): Promise<void> {
  const started = Date.now();
  for (;;) {
    const synced = (await getHealth().catch(() => undefined))?.sync?.syncedBlock ?? -1;
    if (synced >= block) return;
    if (Date.now() - started > timeoutMs) throw new Error(`relay cache synced only to block ${synced} of ${block} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
