import { Wallet } from "ethers";
import type { ClientConfig, ClientState, KeyPackage, PrivateKeyPackage } from "ts-mls";
import {
  acceptPendingCommit,
  authorizeDevice,
  deviceAuthenticationService,
  generateDeviceKeyPackage,
  generateDeviceSignatureKey,
  joinFromWelcome,
  memoryKeyBook,
  mlsClientConfig,
  newPayloadId,
  processIncomingMessage,
  sealApplicationMessage,
  type PendingCommit,
} from "../../../protocol/mls";

export const CHAIN_ID = 31337n;
export const CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3".toLowerCase();

/** A deployment as a client sees it: the chain's key history plus the two policies' configs. */
export function createWorld(options: { now?: () => number } = {}) {
  const keyBook = memoryKeyBook();
  const refusals: string[] = [];
  const service = (policy: "strict" | "lenient") =>
    deviceAuthenticationService({
      keyBook,
      policy,
      chainId: CHAIN_ID,
      contract: CONTRACT,
      now: options.now,
      onRefused: (reason) => refusals.push(`${reason.code}: ${reason.message}`),
    });
  const strict: ClientConfig = mlsClientConfig(service("strict"));
  const lenient: ClientConfig = mlsClientConfig(service("lenient"));
  const wallets = new Map<string, Wallet[]>();
  const nowSeconds = () => Math.floor(Date.now() / 1000);

  function register(username: string): Wallet {
    const wallet = Wallet.createRandom() as unknown as Wallet;
    keyBook.append(username, { address: wallet.address, kind: "registered", timestamp: nowSeconds() });
    wallets.set(username, [wallet]);
    return wallet;
  }

  function changeKey(username: string, kind: "rotated" | "reset", timestamp = nowSeconds()): Wallet {
    const wallet = Wallet.createRandom() as unknown as Wallet;
    keyBook.append(username, { address: wallet.address, kind, timestamp });
    wallets.get(username)!.push(wallet);
    return wallet;
  }

  /** A fresh device of `username`, authorised by key `keyIndex` (default: current), or by `signer`. */
  async function device(username: string, opts: { keyIndex?: number; signer?: Wallet } = {}): Promise<Device> {
    const history = wallets.get(username)!;
    const keyIndex = opts.keyIndex ?? history.length - 1;
    const signer = opts.signer ?? history[keyIndex];
    const signatureKey = await generateDeviceSignatureKey();
    const credential = await authorizeDevice({
      username,
      keyIndex,
      chainId: CHAIN_ID,
      contract: CONTRACT,
      devicePublicKey: signatureKey.publicKey,
      sign: (text) => signer.signMessage(text),
    });
    const newKeyPackage = () => generateDeviceKeyPackage({ credential, signatureKey, lifetimeSeconds: 7 * 24 * 3600 });
    return { username, keyIndex, signatureKey, credential, ...(await newKeyPackage()), newKeyPackage };
  }

  /** `username`'s identity keys, oldest first (index = on-chain key index). */
  const walletsOf = (username: string): Wallet[] => wallets.get(username) ?? [];

  return { keyBook, strict, lenient, refusals, register, changeKey, device, wallets: walletsOf };
}

export interface Device {
  username: string;
  keyIndex: number;
  signatureKey: { publicKey: Uint8Array; signKey: Uint8Array };
  credential: Awaited<ReturnType<typeof authorizeDevice>>;
  publicPackage: KeyPackage;
  privatePackage: PrivateKeyPackage;
  newKeyPackage: () => Promise<{ publicPackage: KeyPackage; privatePackage: PrivateKeyPackage }>;
}

export type Member = { device: Device; state: ClientState };

/**
 * Plays the Delivery Service for one commit: the committer's commit is accepted, every other member
 * processes it, and each device in `joiners` joins from the Welcome. Returns the new member list.
 */
export async function deliverCommit(
  world: ReturnType<typeof createWorld>,
  members: Member[],
  committer: Member,
  pending: PendingCommit,
  joiners: Device[] = [],
): Promise<Member[]> {
  const out: Member[] = [];
  for (const member of members) {
    if (member === committer) {
      out.push({ device: member.device, state: acceptPendingCommit(pending) });
      continue;
    }
    const result = await processIncomingMessage({ state: member.state, message: pending.commit });
    // A member that the commit removed leaves the list.
    if (result.kind === "removed") continue;
    if (result.kind !== "commit") throw new Error(`expected a commit, got ${result.kind}`);
    out.push({ device: member.device, state: result.state });
  }
  for (const device of joiners) {
    const state = await joinFromWelcome({
      welcome: pending.welcome!,
      keyPackage: device.publicPackage,
      privatePackage: device.privatePackage,
      joinConfig: world.lenient,
      memberConfig: world.strict,
    });
    out.push({ device, state });
  }
  return out;
}

/** `from` seals `body`; returns the wire bytes and replaces its state. */
export async function send(from: Member, body: string): Promise<Uint8Array> {
  const { state, message } = await sealApplicationMessage({
    state: from.state,
    payload: { id: newPayloadId(), sentAt: Date.now(), body },
  });
  from.state = state;
  return message;
}

/** `to` opens `message`; returns the body and sender, and replaces its state. */
export async function receive(to: Member, message: Uint8Array): Promise<{ body: string; from: string }> {
  const result = await processIncomingMessage({ state: to.state, message });
  if (result.kind !== "application") throw new Error(`expected an application message, got ${result.kind}`);
  to.state = result.state;
  return { body: result.payload.body, from: result.sender.username };
}
