/**
 * Sends the relayer's transactions one nonce at a time. Many requests may arrive at once (fifty
 * registrations), and a wallet that asks the node for its nonce per transaction hands the same nonce to
 * several of them. Here gas is estimated concurrently (which also surfaces contract reverts before any
 * nonce is spent), then a single queue assigns consecutive nonces, signs and broadcasts; receipts are
 * awaited concurrently outside the queue.
 *
 * Gap-free recovery: a nonce counts as used only after the node accepted the transaction. Any broadcast
 * failure forgets the local nonce, so the next send re-reads the account's pending count from the node (never
 * from a cache): if the failed transaction never arrived, its nonce is reused; if it did, the count includes it.
 * "nonce too low" (another sender on the same account) re-reads the count and retries.
 */
import { type JsonRpcProvider, type TransactionReceipt, type Wallet } from "ethers";
import type { Logger } from "pino";
import { ChatError } from "../../protocol/errors";
import { toChainError } from "./errors";

export interface TxResult {
  blockNumber: number;
  transactionHash: string;
  status: number;
}

export interface TxSenderOptions {
  wallet: Wallet;
  provider: JsonRpcProvider;
  logger: Logger;
  receiptTimeoutMs?: number;
  receiptPollMs?: number;
}

export class TxSender {
  private nonce: number | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly opts: Required<TxSenderOptions>;

  constructor(options: TxSenderOptions) {
    this.opts = { receiptTimeoutMs: 120_000, receiptPollMs: 150, ...options };
  }

  /** Forget the local nonce (the chain was reset or replaced): the next send asks the node. */
  resetNonce(): void {
    this.nonce = null;
  }

  /** Runs `task` after every task queued before it (a promise-chain mutex). */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Estimates, sends and waits for the receipt of a call to `to` with `data`. */
  async send(params: { to: string; data: string; action: string }): Promise<{ receipt: TransactionReceipt; hash: string }> {
    const { provider, wallet, logger } = this.opts;
    let gasLimit: bigint;
    let fees: Awaited<ReturnType<JsonRpcProvider["getFeeData"]>>;
    let chainId: bigint;
    try {
      [gasLimit, fees, chainId] = await Promise.all([
        provider.estimateGas({ from: wallet.address, to: params.to, data: params.data }),
        provider.getFeeData(),
        provider.getNetwork().then((n) => n.chainId),
      ]);
    } catch (error) {
      throw toChainError(error, params.action);
    }
    // Headroom: state may change between estimate and inclusion (another user's transaction).
    gasLimit = (gasLimit * 13n) / 10n + 10_000n;
    const feeFields =
      fees.maxFeePerGas !== null
        ? { type: 2, maxFeePerGas: fees.maxFeePerGas * 2n, maxPriorityFeePerGas: fees.maxPriorityFeePerGas ?? 0n }
        : { type: 0, gasPrice: fees.gasPrice ?? undefined };

    const hash = await this.exclusive(async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          if (this.nonce === null) this.nonce = await this.pendingCount();
          const nonce = this.nonce;
          const signed = await wallet.signTransaction({ to: params.to, data: params.data, gasLimit, chainId, nonce, ...feeFields });
          const response = await provider.broadcastTransaction(signed);
          this.nonce = nonce + 1;
          return response.hash;
        } catch (error) {
          this.nonce = null; // re-read from the node next time: never leaves a gap
          const code = (error as { code?: string })?.code;
          if ((code === "NONCE_EXPIRED" || code === "REPLACEMENT_UNDERPRICED") && attempt < 6) {
            logger.warn({ action: params.action, attempt }, "relayer nonce was taken; retrying with a fresh nonce");
            // Another sender on the same account: a short random pause lets its transaction land first.
            await new Promise((r) => setTimeout(r, 20 + Math.random() * 80 * attempt));
            continue;
          }
          throw toChainError(error, params.action);
        }
      }
    });

    const receipt = await this.waitForReceipt(hash, params.action);
    return { receipt, hash };
  }

  /**
   * The account's pending transaction count, asked of the node itself: a provider's getTransactionCount may
   * answer an identical request of the last 250 ms from its cache, and a stale count reuses a nonce.
   */
  private async pendingCount(): Promise<number> {
    const { provider, wallet } = this.opts;
    const count: unknown = await provider.send("eth_getTransactionCount", [wallet.address, "pending"]);
    if (typeof count !== "string" || !/^0x[0-9a-fA-F]+$/.test(count)) throw new ChatError("CHAIN_UNAVAILABLE", "the node gave no transaction count");
    return Number(BigInt(count));
  }

  private async waitForReceipt(hash: string, action: string): Promise<TransactionReceipt> {
    const { provider, receiptTimeoutMs, receiptPollMs } = this.opts;
    const deadline = Date.now() + receiptTimeoutMs;
    let lastError: unknown = null;
    let nextStuckCheck = Date.now() + 10_000;
    for (;;) {
      try {
        const receipt = await provider.getTransactionReceipt(hash);
        if (receipt) return receipt;
      } catch (error) {
        lastError = error;
      }
      if (Date.now() > nextStuckCheck) {
        nextStuckCheck = Date.now() + 10_000;
        // A transaction the node no longer knows (dropped, or the chain was reset under a nonce gap)
        // will never be mined: forget the local nonce so later sends are not stuck behind it.
        const known = await provider.getTransaction(hash).catch(() => undefined);
        if (known === null) {
          this.nonce = null;
          throw new ChatError("CHAIN_UNAVAILABLE", `transaction for ${action} was dropped by the node; retry`, { transactionHash: hash });
        }
      }
      if (Date.now() > deadline) {
        throw new ChatError("CHAIN_UNAVAILABLE", `transaction for ${action} not mined in time`, {
          transactionHash: hash,
          cause: lastError ? String((lastError as Error).message ?? lastError).slice(0, 200) : undefined,
        });
      }
      await new Promise((r) => setTimeout(r, receiptPollMs));
    }
  }
}
