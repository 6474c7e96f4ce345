/**
 * Sends the relayer's transactions one nonce at a time. Many requests may arrive at once (fifty
 * registrations), and a wallet that asks the node for its nonce per transaction hands the same nonce to
 * several of them. Here gas is estimated concurrently (the estimate is also the simulation that surfaces a
 * contract revert before any nonce is spent or gas paid), then a single queue assigns consecutive nonces,
 * signs and broadcasts; receipts are awaited concurrently outside the queue.
 *
 * Gap-free recovery: a nonce counts as used only after the node accepted the transaction. Any broadcast
 * failure forgets the local nonce, so the next send re-reads the account's pending count from the node (never
 * from a cache): if the failed transaction never arrived, its nonce is reused; if it did, the count includes it.
 * "nonce too low" (another sender on the same account) re-reads the count and retries.
 *
 * Stuck transactions: one not mined after `replaceAfterMs` is re-sent at the same nonce with both fees raised
 * by `feeBumpPercent` (nodes accept a replacement only at +12.5 % or more), at most `maxReplacements` times.
 * Before each replacement the call is simulated again and its deadline compared with the chain's time: a call
 * that would now revert is replaced by an empty transfer to the relayer itself instead, so that the relayer
 * never pays for a reverted transaction, even when a deadline passes while the transaction waits.
 */
import { type JsonRpcProvider, type TransactionReceipt, type Wallet } from "ethers";
import type { Logger } from "pino";
import { ChatError } from "../../protocol/errors";
import { toChainError } from "./errors";

export interface TxSenderOptions {
  wallet: Wallet;
  provider: JsonRpcProvider;
  logger: Logger;
  receiptTimeoutMs?: number;
  receiptPollMs?: number;
  /** a transaction not mined after this is re-sent with higher fees */
  replaceAfterMs?: number;
  /** percent each replacement adds to both fees (at least 13: nodes require +12.5 %) */
  feeBumpPercent?: number;
  /** replacements of one transaction at most */
  maxReplacements?: number;
}

/** What the relayer's transactions came to since start (for /metrics and tests). */
export interface TxSenderStats {
  /** transactions first broadcast (replacements not counted) */
  broadcast: number;
  /** replacements broadcast at a higher fee */
  replaced: number;
  /** stuck calls replaced by an empty transfer because they would have reverted */
  cancelled: number;
  mined: number;
  /** mined with status 0: gas paid for nothing (should stay 0) */
  reverted: number;
}

type FeeFields = { type: 2; maxFeePerGas: bigint; maxPriorityFeePerGas: bigint } | { type: 0; gasPrice: bigint };

interface Sent {
  hash: string;
  fees: FeeFields;
  /** an empty self-transfer that took the place of a call that would revert */
  cancel: boolean;
}

export class TxSender {
  private nonce: number | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly opts: Required<TxSenderOptions>;
  private readonly counts: TxSenderStats = { broadcast: 0, replaced: 0, cancelled: 0, mined: 0, reverted: 0 };

  constructor(options: TxSenderOptions) {
    this.opts = { receiptTimeoutMs: 120_000, receiptPollMs: 150, replaceAfterMs: 30_000, feeBumpPercent: 25, maxReplacements: 5, ...options };
    if (this.opts.feeBumpPercent < 13) throw new RangeError("feeBumpPercent must be at least 13 (nodes require +12.5 %)");
  }

  stats(): TxSenderStats {
    return { ...this.counts };
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

  /**
   * Simulates, sends and waits for the receipt of a call to `to` with `data`. `deadline` (unix seconds) is
   * the signature deadline the contract checks: a stuck call is not left to be mined after it.
   */
  async send(params: { to: string; data: string; action: string; deadline?: number }): Promise<{ receipt: TransactionReceipt; hash: string }> {
    const { provider, wallet, logger } = this.opts;
    let gasLimit: bigint;
    let feeData: Awaited<ReturnType<JsonRpcProvider["getFeeData"]>>;
    let chainId: bigint;
    try {
      [gasLimit, feeData, chainId] = await Promise.all([
        provider.estimateGas({ from: wallet.address, to: params.to, data: params.data }),
        provider.getFeeData(),
        provider.getNetwork().then((n) => n.chainId),
      ]);
    } catch (error) {
      throw toChainError(error, params.action);
    }
    // Headroom: state may change between estimate and inclusion (another user's transaction).
    gasLimit = (gasLimit * 13n) / 10n + 10_000n;
    const fees = freshFees(feeData);

    const { hash, nonce } = await this.exclusive(async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          if (this.nonce === null) this.nonce = await this.pendingCount();
          const nonce = this.nonce;
          const signed = await wallet.signTransaction({ to: params.to, data: params.data, gasLimit, chainId, nonce, ...fees });
          const response = await provider.broadcastTransaction(signed);
          this.nonce = nonce + 1;
          this.counts.broadcast++;
          return { hash: response.hash, nonce };
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

    const sent: Sent[] = [{ hash, fees, cancel: false }];
    const found = await this.waitForReceipt({ ...params, gasLimit, chainId, nonce, sent });
    if (found.receipt.status === 1) this.counts.mined++;
    else this.counts.reverted++;
    if (found.cancelled) throw found.cancelled;
    return { receipt: found.receipt, hash: found.hash };
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

  /**
   * Waits until one of the transactions sent at `nonce` has a receipt, replacing the latest with a
   * higher-fee one each `replaceAfterMs`. `cancelled` is the error to answer when an empty transfer took
   * the call's place.
   */
  private async waitForReceipt(tx: {
    to: string;
    data: string;
    action: string;
    deadline?: number;
    gasLimit: bigint;
    chainId: bigint;
    nonce: number;
    sent: Sent[];
  }): Promise<{ receipt: TransactionReceipt; hash: string; cancelled: ChatError | null }> {
    const { provider, receiptTimeoutMs, receiptPollMs, replaceAfterMs, maxReplacements } = this.opts;
    const deadline = Date.now() + receiptTimeoutMs;
    let lastError: unknown = null;
    let nextStuckCheck = Date.now() + 10_000;
    let nextReplacement = Date.now() + replaceAfterMs;
    let replacements = 0;
    let cancelled: ChatError | null = null;
    for (;;) {
      for (const candidate of [...tx.sent].reverse()) {
        try {
          const receipt = await provider.getTransactionReceipt(candidate.hash);
          if (receipt) return { receipt, hash: candidate.hash, cancelled: candidate.cancel ? cancelled : null };
        } catch (error) {
          lastError = error;
        }
      }
      if (Date.now() >= nextReplacement && replacements < maxReplacements) {
        replacements++;
        nextReplacement = Date.now() + replaceAfterMs;
        cancelled = (await this.replace(tx, cancelled)) ?? cancelled;
        continue;
      }
      if (Date.now() > nextStuckCheck) {
        nextStuckCheck = Date.now() + 10_000;
        // A transaction the node no longer knows (dropped, or the chain was reset under a nonce gap)
        // will never be mined: forget the local nonce so later sends are not stuck behind it.
        const known = await Promise.all(tx.sent.map((s) => provider.getTransaction(s.hash).catch(() => undefined)));
        if (known.every((k) => k === null)) {
          this.nonce = null;
          throw new ChatError("CHAIN_UNAVAILABLE", `transaction for ${tx.action} was dropped by the node; retry`, { transactionHash: tx.sent.at(-1)!.hash });
        }
      }
      if (Date.now() > deadline) {
        throw new ChatError("CHAIN_UNAVAILABLE", `transaction for ${tx.action} not mined in time`, {
          transactionHash: tx.sent.at(-1)!.hash,
          cause: lastError ? String((lastError as Error).message ?? lastError).slice(0, 200) : undefined,
        });
      }
      await new Promise((r) => setTimeout(r, receiptPollMs));
    }
  }

  /**
   * Re-sends the stuck transaction at its nonce with raised fees: the same call while it would still
   * succeed, else an empty transfer to the relayer (then answers the error the call would have met).
   */
  private async replace(
    tx: { to: string; data: string; action: string; deadline?: number; gasLimit: bigint; chainId: bigint; nonce: number; sent: Sent[] },
    alreadyCancelled: ChatError | null,
  ): Promise<ChatError | null> {
    const { provider, wallet, logger, feeBumpPercent } = this.opts;
    const previous = tx.sent.at(-1)!;
    let reason: ChatError | null = alreadyCancelled;
    if (!reason) reason = await this.wouldRevert(tx);
    let fresh: FeeFields | null = null;
    try {
      fresh = freshFees(await provider.getFeeData());
    } catch {
      // Without current fees the bump alone must do.
    }
    const fees = bumpFees(previous.fees, fresh, feeBumpPercent);
    const cancel = reason !== null;
    try {
      const signed = await wallet.signTransaction({
        chainId: tx.chainId,
        nonce: tx.nonce,
        ...fees,
        ...(cancel ? { to: wallet.address, value: 0n, data: "0x", gasLimit: 21_000n } : { to: tx.to, data: tx.data, gasLimit: tx.gasLimit }),
      });
      const response = await provider.broadcastTransaction(signed);
      tx.sent.push({ hash: response.hash, fees, cancel });
      if (cancel && !alreadyCancelled) this.counts.cancelled++;
      else this.counts.replaced++;
      logger.warn(
        { action: tx.action, nonce: tx.nonce, replaces: previous.hash, hash: response.hash, cancel, ...feeLog(fees) },
        cancel ? "stuck transaction would now revert: replaced by an empty transfer" : "stuck transaction re-sent with higher fees",
      );
    } catch (error) {
      // "nonce too low": an earlier version was mined and its receipt is found next poll. Underpriced: the
      // next replacement bumps again from these fees.
      const code = (error as { code?: string })?.code;
      if (code === "REPLACEMENT_UNDERPRICED") tx.sent.push({ hash: previous.hash, fees, cancel: previous.cancel });
      logger.warn({ action: tx.action, nonce: tx.nonce, code }, "could not replace a stuck transaction");
    }
    return reason;
  }

  /**
   * The error the call would meet if mined in the next block, or null: its deadline is checked against the
   * chain's latest block time plus one replacement interval (it may wait that long again), then the call
   * is simulated on the latest state.
   */
  private async wouldRevert(tx: { to: string; data: string; action: string; deadline?: number }): Promise<ChatError | null> {
    const { provider, wallet, replaceAfterMs } = this.opts;
    try {
      if (tx.deadline !== undefined) {
        const latest = await provider.getBlock("latest");
        if (latest && tx.deadline < latest.timestamp + Math.ceil(replaceAfterMs / 1000)) {
          return new ChatError("SIGNATURE_EXPIRED", `the signature deadline ${tx.deadline} passed while the transaction waited to be mined; sign again`);
        }
      }
      await provider.call({ from: wallet.address, to: tx.to, data: tx.data, blockTag: "latest" });
      return null;
    } catch (error) {
      const chatError = toChainError(error, tx.action);
      // Only a contract rejection is a reason to cancel; an unreachable node is not.
      return chatError.code === "CHAIN_UNAVAILABLE" ? null : chatError;
    }
  }
}

/** The fees to offer now: twice what the node suggests, so a rising base fee does not strand the transaction. */
function freshFees(fees: Awaited<ReturnType<JsonRpcProvider["getFeeData"]>>): FeeFields {
  if (fees.maxFeePerGas !== null) {
    return { type: 2, maxFeePerGas: fees.maxFeePerGas * 2n, maxPriorityFeePerGas: fees.maxPriorityFeePerGas ?? 0n };
  }
  return { type: 0, gasPrice: fees.gasPrice ?? 0n };
}

/**
 * Fees for a replacement: each of the previous ones raised by `percent` (rounded up, at least +1 wei), or
 * what the node suggests now when that is higher.
 */
export function bumpFees(previous: FeeFields, fresh: FeeFields | null, percent: number): FeeFields {
  const raise = (value: bigint) => {
    const raised = (value * BigInt(100 + percent) + 99n) / 100n;
    return raised > value ? raised : value + 1n;
  };
  const max = (a: bigint, b: bigint) => (a > b ? a : b);
  if (previous.type === 2) {
    const priority = max(raise(previous.maxPriorityFeePerGas), fresh?.type === 2 ? fresh.maxPriorityFeePerGas : 0n);
    const maxFee = max(max(raise(previous.maxFeePerGas), fresh?.type === 2 ? fresh.maxFeePerGas : 0n), priority);
    return { type: 2, maxFeePerGas: maxFee, maxPriorityFeePerGas: priority };
  }
  return { type: 0, gasPrice: max(raise(previous.gasPrice), fresh?.type === 0 ? fresh.gasPrice : 0n) };
}

function feeLog(fees: FeeFields): Record<string, string> {
  return fees.type === 2
    ? { maxFeePerGas: fees.maxFeePerGas.toString(), maxPriorityFeePerGas: fees.maxPriorityFeePerGas.toString() }
    : { gasPrice: fees.gasPrice.toString() };
}
