/**
 * The relay's view of the chain: ChatRegistry reads, the relayer's writes, blocks and event logs,
 * behind a small interface so the server and the cache sync can be tested with real nodes.
 * The JSON-RPC provider is created only once the node has answered eth_chainId, so that a node that is
 * down at start makes requests fail fast with CHAIN_UNAVAILABLE instead of hanging.
 */
import { Wallet, getAddress, type JsonRpcProvider, type Log } from "ethers";
import type { Logger } from "pino";
import { connectRegistry, registryInterface, type RegistryContract } from "../../chain/registry";
import { createRpcProvider, fetchChainId, hasContractCode } from "../../chain/rpc";
import { ChatError } from "../../protocol/errors";
import { usernameHash } from "../../protocol/username";
import { toChainError } from "./errors";
import { TxSender, type TxSenderStats } from "./tx-sender";
import { DEFAULT_RELAYER_GAS, type RelayerGasSettings } from "../config";

export type KeyKind = "registered" | "rotated" | "reset";

/** One decoded ChatRegistry event, in chain order. */
export type RegistryEvent =
  | (EventBase & { type: "registered"; username: string; credentialHash: string; publicKey: string })
  | (EventBase & { type: "rotated" | "reset"; index: number; publicKey: string })
  | (EventBase & { type: "credential"; credentialHash: string })
  | (EventBase & { type: "resetRequested"; publicKey: string; effectiveAt: number })
  | (EventBase & { type: "resetCancelled"; pendingKey: string });

/** The events that append to a key history (the others change the credential or a pending reset). */
export type KeyEvent = Extract<RegistryEvent, { type: "registered" | "rotated" | "reset" }>;

export function isKeyEvent(event: RegistryEvent): event is KeyEvent {
  return event.type === "registered" || event.type === "rotated" || event.type === "reset";
}

/** A reset requested on chain and not yet completed or cancelled. */
export interface PendingReset {
  /** address of the pending key */
  address: string;
  /** unix seconds of chain time from which anyone may complete it */
  effectiveAt: number;
}

interface EventBase {
  usernameHash: string;
  blockNumber: number;
  blockHash: string;
  transactionHash: string;
  logIndex: number;
}

export interface ChainBlock {
  number: number;
  hash: string;
  /** Unix seconds */
  timestamp: number;
}

export interface TransactionResult {
  blockNumber: number;
  transactionHash: string;
}

type Compact = [string, string];

export interface RelayerFunds {
  balanceWei: bigint;
  warnBelowWei: bigint;
  low: boolean;
}

/** Writes waiting for one user at most; more are refused rather than held (each holds a request open). */
const MAX_WAITING_WRITES_PER_USER = 8;
/** How long a balance read is reused (/healthz and /metrics may be polled often). */
const BALANCE_CACHE_MS = 5_000;
/** How often a low balance is logged at most. */
const BALANCE_WARN_EVERY_MS = 60_000;

export interface RegistryChain {
  readonly contractAddress: string;
  readonly relayerAddress: string;
  /** The chain id, learned once (throws CHAIN_UNAVAILABLE until the node answers). */
  chainId(): Promise<bigint>;
  /** eth_chainId asked now, to notice the endpoint now serves another chain. */
  liveChainId(): Promise<bigint>;
  blockNumber(): Promise<number>;
  getBlock(number: number): Promise<ChainBlock | null>;
  /** Whether the contract's code is present at its address. */
  hasCode(): Promise<boolean>;
  /** Decoded ChatRegistry events of blocks [from, to], optionally of one user. */
  getEvents(from: number, to: number, username?: string): Promise<RegistryEvent[]>;
  credentialHash(username: string): Promise<string>;
  currentKey(username: string): Promise<{ address: string; index: number } | null>;
  keyCount(username: string): Promise<number>;
  isRelayer(): Promise<boolean>;
  /** The user's pending reset on chain now, or null. */
  pendingReset(username: string): Promise<PendingReset | null>;
  /** Forget the relayer's local nonce (after a chain reset); the next transaction asks the node. */
  resetNonce(): void;
  /** The relayer's balance (read at most every few seconds) and whether it is below the warning threshold. */
  relayerFunds(): Promise<RelayerFunds>;
  /** What the relayer's transactions came to since start (zeros before the first). */
  transactionStats(): TxSenderStats;
  register(args: { username: string; credentialHash: string; publicKey: string; deadline: number; signature: Compact }): Promise<TransactionResult>;
  rotateKey(args: { username: string; newPublicKey: string; deadline: number; currentKeySignature: Compact; newKeySignature: Compact }): Promise<TransactionResult>;
  /** Starts a time-locked reset (relayer only); answers with the time it may be completed from. */
  requestReset(args: { username: string; newPublicKey: string; deadline: number; newKeySignature: Compact }): Promise<TransactionResult & { effectiveAt: number }>;
  /** Relays a cancel signed by the user's current key (the contract checks the signature). */
  cancelReset(args: { username: string; deadline: number; signature: Compact }): Promise<TransactionResult>;
  /** Makes a due pending reset current (anyone may). */
  completeReset(args: { username: string; publicKey: string }): Promise<TransactionResult>;
  updateCredential(args: { username: string; credentialHash: string; deadline: number; signature: Compact }): Promise<TransactionResult>;
  close(): Promise<void>;
}

const EVENT_TOPICS = {
  registered: registryInterface.getEvent("UserRegistered")!.topicHash,
  rotated: registryInterface.getEvent("KeyRotated")!.topicHash,
  reset: registryInterface.getEvent("KeyReset")!.topicHash,
  credential: registryInterface.getEvent("CredentialUpdated")!.topicHash,
  resetRequested: registryInterface.getEvent("ResetRequested")!.topicHash,
  resetCancelled: registryInterface.getEvent("ResetCancelled")!.topicHash,
};

export function decodeRegistryLog(log: Log): RegistryEvent | null {
  const parsed = registryInterface.parseLog({ topics: [...log.topics], data: log.data });
  if (!parsed) return null;
  const base: EventBase = {
    usernameHash: String(parsed.args.usernameHash).toLowerCase(),
    blockNumber: log.blockNumber,
    blockHash: log.blockHash,
    transactionHash: log.transactionHash,
    logIndex: log.index,
  };
  switch (parsed.name) {
    case "UserRegistered":
      return {
        ...base,
        type: "registered",
        username: String(parsed.args.username),
        credentialHash: String(parsed.args.credentialHash).toLowerCase(),
        publicKey: String(parsed.args.publicKey).toLowerCase(),
      };
    case "KeyRotated":
    case "KeyReset":
      return {
        ...base,
        type: parsed.name === "KeyRotated" ? "rotated" : "reset",
        index: Number(parsed.args.index),
        publicKey: String(parsed.args.publicKey).toLowerCase(),
      };
    case "CredentialUpdated":
      return { ...base, type: "credential", credentialHash: String(parsed.args.credentialHash).toLowerCase() };
    case "ResetRequested":
      return {
        ...base,
        type: "resetRequested",
        publicKey: String(parsed.args.publicKey).toLowerCase(),
        effectiveAt: Number(parsed.args.effectiveAt),
      };
    case "ResetCancelled":
      return { ...base, type: "resetCancelled", pendingKey: getAddress(String(parsed.args.pendingKey)) };
    default:
      return null;
  }
}

export function createEthersChain(params: {
  rpcUrl: string;
  contractAddress: string;
  privateKey: string;
  logger: Logger;
  /** per JSON-RPC request; default 10 s */
  requestTimeoutMs?: number;
  receiptTimeoutMs?: number;
  /** pre-broadcast deadline margin, fee replacement and balance warning (defaults as in the settings) */
  gas?: Partial<RelayerGasSettings>;
}): RegistryChain {
  const contractAddress = getAddress(params.contractAddress);
  const relayerAddress = new Wallet(params.privateKey).address;
  const timeout = params.requestTimeoutMs ?? 10_000;
  let ready: Promise<{ provider: JsonRpcProvider; contract: RegistryContract; sender: TxSender; chainId: bigint }> | null = null;
  let closed = false;
  const gas: RelayerGasSettings = { ...DEFAULT_RELAYER_GAS, ...params.gas };
  /** Each user's writes run one after another: the tail of each user's queue and how many wait in it. */
  const userQueues = new Map<string, { tail: Promise<unknown>; waiting: number }>();
  let balance: { funds: RelayerFunds; readAt: number } | null = null;
  let balanceRead: Promise<RelayerFunds> | null = null;
  let lastLowBalanceWarning = 0;
  let currentSender: TxSender | null = null;
  const stats = (): TxSenderStats => currentSender?.stats() ?? { broadcast: 0, replaced: 0, cancelled: 0, mined: 0, reverted: 0 };

  function connect() {
    if (closed) return Promise.reject(new ChatError("CHAIN_UNAVAILABLE", "chain connection closed"));
    if (!ready) {
      ready = (async () => {
        // RPC_URL may carry an API key: messages name the setting, not its value.
        const chainId = await fetchChainId(params.rpcUrl, { endpointName: "RPC_URL", timeoutMs: timeout });
        const provider = createRpcProvider(params.rpcUrl, chainId, { timeoutMs: timeout, batchMaxCount: 50 });
        const wallet = new Wallet(params.privateKey, provider);
        const contract = connectRegistry(contractAddress, provider);
        const sender = new TxSender({
          wallet,
          provider,
          logger: params.logger,
          receiptTimeoutMs: params.receiptTimeoutMs,
          replaceAfterMs: gas.replaceAfterMs,
          feeBumpPercent: gas.feeBumpPercent,
          maxReplacements: gas.maxReplacements,
        });
        currentSender = sender;
        return { provider, contract, sender, chainId };
      })();
      // Forget a failed start so the next request tries again.
      ready.catch(() => (ready = null));
      // Read the balance once connected, so that a low one is logged at start, not only at the first write.
      ready.then(() => readFunds().catch(() => undefined), () => undefined);
    }
    return ready.catch((error) => {
      throw toChainError(error, "connect");
    });
  }

  async function call<T>(action: string, task: (c: Awaited<ReturnType<typeof connect>>) => Promise<T>): Promise<T> {
    const connected = await connect();
    try {
      return await task(connected);
    } catch (error) {
      throw toChainError(error, action);
    }
  }

  /**
   * Runs `task` after every earlier write for `username` has been mined or refused. Two requests for one
   * user (five registrations of one name, two rotations signed with one nonce) are then never simulated
   * against the same state: the second is simulated after the first is mined, and so fails before it is
   * broadcast instead of reverting on chain at the relayer's cost.
   */
  function serialPerUser<T>(username: string, task: () => Promise<T>): Promise<T> {
    const queue = userQueues.get(username) ?? { tail: Promise.resolve(), waiting: 0 };
    if (queue.waiting >= MAX_WAITING_WRITES_PER_USER) {
      return Promise.reject(new ChatError("RATE_LIMITED", `too many writes for ${username} are waiting; retry shortly`, { retryAfterSeconds: 5 }));
    }
    queue.waiting++;
    const run = queue.tail.then(task, task);
    queue.tail = run.catch(() => undefined);
    userQueues.set(username, queue);
    const done = () => {
      queue.waiting--;
      if (queue.waiting === 0 && userQueues.get(username) === queue) userQueues.delete(username);
    };
    run.then(done, done);
    return run;
  }

  /** Refuses a signature deadline that could pass before the transaction is mined (a revert paid for). */
  async function checkDeadlineMargin(provider: JsonRpcProvider, deadline: number, action: string) {
    let chainTime: number;
    try {
      const latest = await provider.getBlock("latest");
      if (!latest) throw new Error("no latest block");
      chainTime = latest.timestamp;
    } catch (error) {
      throw toChainError(error, action);
    }
    if (deadline < chainTime + gas.deadlineMarginSeconds) {
      throw new ChatError(
        "SIGNATURE_EXPIRED",
        `deadline ${deadline} is less than ${gas.deadlineMarginSeconds} s after the chain's time ${chainTime}: it could pass before the transaction is mined; sign a later one`,
        { field: "deadline", chainTime, marginSeconds: gas.deadlineMarginSeconds },
      );
    }
  }

  async function readFunds(): Promise<RelayerFunds> {
    if (balance && Date.now() - balance.readAt < BALANCE_CACHE_MS) return balance.funds;
    balanceRead ??= call("eth_getBalance", async ({ provider }) => {
      const balanceWei = await provider.getBalance(relayerAddress, "latest");
      const funds = { balanceWei, warnBelowWei: gas.balanceWarnWei, low: balanceWei < gas.balanceWarnWei };
      balance = { funds, readAt: Date.now() };
      if (funds.low && Date.now() - lastLowBalanceWarning >= BALANCE_WARN_EVERY_MS) {
        lastLowBalanceWarning = Date.now();
        params.logger.warn(
          { account: relayerAddress, balanceWei: balanceWei.toString(), warnBelowWei: gas.balanceWarnWei.toString() },
          "relayer balance is below RELAYER_BALANCE_WARN_WEI: fund it before registrations start failing",
        );
      }
      return funds;
    }).finally(() => (balanceRead = null));
    return balanceRead;
  }

  /**
   * Sends the call `populate` builds with the typed contract (so its arguments are checked at build time),
   * in `username`'s queue, after checking `deadline` against the chain's time.
   */
  function transact(
    action: string,
    username: string,
    deadline: number | undefined,
    populate: (contract: RegistryContract) => Promise<{ data: string }>,
  ): Promise<TransactionResult & { logs: readonly Log[] }> {
    return serialPerUser(username, async () => {
      const result = await sendNow(action, deadline, populate);
      balance = null; // the balance changed: the next read (and its warning) sees the new one
      void readFunds().catch(() => undefined);
      return result;
    });
  }

  async function sendNow(
    action: string,
    deadline: number | undefined,
    populate: (contract: RegistryContract) => Promise<{ data: string }>,
  ): Promise<TransactionResult & { logs: readonly Log[] }> {
    const { sender, provider, contract } = await connect();
    if (deadline !== undefined) await checkDeadlineMargin(provider, deadline, action);
    const { data } = await populate(contract);
    const { receipt, hash } = await sender.send({ to: contractAddress, data, action, deadline });
    if (receipt.status !== 1) {
      // Mined but reverted (the state changed after the estimate): replay it to learn why.
      try {
        await provider.call({ from: relayerAddress, to: contractAddress, data, blockTag: receipt.blockNumber });
      } catch (error) {
        throw toChainError(error, action);
      }
      throw new ChatError("INTERNAL", `${action} transaction reverted`, { transactionHash: hash });
    }
    return { blockNumber: receipt.blockNumber, transactionHash: hash, logs: receipt.logs };
  }

  const mined = ({ blockNumber, transactionHash }: TransactionResult): TransactionResult => ({ blockNumber, transactionHash });

  return {
    contractAddress,
    relayerAddress,
    chainId: async () => (await connect()).chainId,
    liveChainId: () => call("eth_chainId", async ({ provider }) => BigInt(await provider.send("eth_chainId", []))),
    blockNumber: () => call("eth_blockNumber", ({ provider }) => provider.getBlockNumber()),
    getBlock: (number) =>
      call("eth_getBlockByNumber", async ({ provider }) => {
        const block = await provider.getBlock(number);
        return block ? { number: block.number, hash: block.hash!, timestamp: block.timestamp } : null;
      }),
    hasCode: () => call("eth_getCode", ({ provider }) => hasContractCode(provider, contractAddress)),
    getEvents: (from, to, username) =>
      call("eth_getLogs", async ({ provider }) => {
        const topics: (string | string[] | null)[] = [Object.values(EVENT_TOPICS)];
        if (username !== undefined) topics.push(usernameHash(username));
        const logs = await provider.getLogs({ address: contractAddress, fromBlock: from, toBlock: to, topics });
        return logs
          .filter((log) => !log.removed)
          .sort((a, b) => a.blockNumber - b.blockNumber || a.index - b.index)
          .map(decodeRegistryLog)
          .filter((event): event is RegistryEvent => event !== null);
      }),
    credentialHash: (username) =>
      call("credentialHash", async ({ contract }) => String(await contract.credentialHash(username)).toLowerCase()),
    currentKey: (username) =>
      call("currentKey", async ({ contract }) => {
        if ((await contract.keyCount(username)) === 0n) return null;
        const [address, index] = await contract.currentKey(username);
        return { address: getAddress(address), index: Number(index) };
      }),
    keyCount: (username) => call("keyCount", async ({ contract }) => Number(await contract.keyCount(username))),
    isRelayer: () => call("isRelayer", ({ contract }) => contract.isRelayer(relayerAddress)),
    pendingReset: (username) =>
      call("pendingReset", async ({ contract }) => {
        const [key, effectiveAt] = await contract.pendingReset(username);
        return /^0x0{40}$/i.test(key) ? null : { address: getAddress(key), effectiveAt: Number(effectiveAt) };
      }),
    register: async (a) =>
      mined(await transact("register", a.username, a.deadline, (c) => c.register.populateTransaction(a.username, a.credentialHash, a.publicKey, a.deadline, a.signature))),
    rotateKey: async (a) =>
      mined(
        await transact("rotateKey", a.username, a.deadline, (c) =>
          c.rotateKey.populateTransaction(a.username, a.newPublicKey, a.deadline, a.currentKeySignature, a.newKeySignature),
        ),
      ),
    requestReset: async (a) => {
      const result = await transact("requestReset", a.username, a.deadline, (c) => c.requestReset.populateTransaction(a.username, a.newPublicKey, a.deadline, a.newKeySignature));
      const requested = result.logs.map((log) => decodeRegistryLog(log as Log)).find((e) => e?.type === "resetRequested");
      if (requested?.type !== "resetRequested") throw new ChatError("INTERNAL", "requestReset mined without a ResetRequested event", { transactionHash: result.transactionHash });
      return { ...mined(result), effectiveAt: requested.effectiveAt };
    },
    cancelReset: async (a) => mined(await transact("cancelReset", a.username, a.deadline, (c) => c.cancelReset.populateTransaction(a.username, a.deadline, a.signature))),
    completeReset: async (a) => mined(await transact("completeReset", a.username, undefined, (c) => c.completeReset.populateTransaction(a.username, a.publicKey))),
    updateCredential: async (a) =>
      mined(await transact("updateCredential", a.username, a.deadline, (c) => c.updateCredential.populateTransaction(a.username, a.credentialHash, a.deadline, a.signature))),
    relayerFunds: readFunds,
    transactionStats: () => stats(),
    resetNonce: () => {
      void ready?.then((c) => c.sender.resetNonce()).catch(() => undefined);
    },
    close: async () => {
      closed = true;
      const current = ready;
      ready = null;
      if (current) (await current.catch(() => null))?.provider.destroy();
    },
  };
}

