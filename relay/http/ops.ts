/** GET /healthz, GET /metrics, GET /v1/info. */
import { createHash, timingSafeEqual } from "node:crypto";
import { Router, type Request } from "express";
import { Counter, Gauge } from "prom-client";
import { ChatError } from "../../protocol/errors";
import { PROTOCOL_VERSION } from "../../protocol/wire";
import type { MessageBus } from "../bus/bus";
import type { RelayerFunds } from "../chain/registry";
import type { Mailbox } from "../storage/mailbox";
import { fromStorage, type HttpContext } from "./context";
import { sendError } from "./errors";

/** Resolves true when `task` settles ok within `ms`. */
async function healthy(task: () => Promise<unknown>, ms = 2_000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([task(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("timeout")), ms)))]);
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Whether the request carries `Authorization: Bearer <token>`. Both sides are hashed first so that the
 * comparison takes the same time whatever the length or content of the guess.
 */
function bearerMatches(req: Request, token: string): boolean {
  const match = /^Bearer ([\x21-\x7e]+)$/.exec(req.get("authorization") ?? "");
  if (!match) return false;
  const digest = (value: string) => createHash("sha256").update(value, "utf8").digest();
  return timingSafeEqual(digest(match[1]), digest(token));
}

export function opsRoutes(
  ctx: HttpContext & {
    mailbox: Mailbox;
    bus?: MessageBus;
    /** When set, /metrics answers only requests with this bearer token (401 otherwise). */
    metricsToken?: string | null;
  },
): Router {
  const router = Router();

  /** The relayer's balance, or null when the node does not answer in time (a scrape must not hang on it). */
  const relayerFunds = async (): Promise<RelayerFunds | null> => {
    let funds: RelayerFunds | null = null;
    await healthy(async () => (funds = await ctx.chain.relayerFunds()));
    return funds;
  };

  // Read at scrape time: the gauges hold nothing between scrapes. A float loses wei below ~1e-7 of the
  // balance, which no alert needs.
  new Gauge({
    name: "chat_relay_relayer_balance_wei",
    help: "The relayer account's balance in wei (absent when the node did not answer)",
    registers: [ctx.metrics],
    async collect() {
      const funds = await relayerFunds();
      this.reset();
      if (funds) this.set(Number(funds.balanceWei));
    },
  });
  new Gauge({
    name: "chat_relay_relayer_balance_warn_wei",
    help: "RELAYER_BALANCE_WARN_WEI: below this balance the relay warns",
    registers: [ctx.metrics],
    async collect() {
      const funds = await relayerFunds();
      this.reset();
      if (funds) this.set(Number(funds.warnBelowWei));
    },
  });
  new Counter({
    name: "chat_relay_relayer_transactions_total",
    help: "The relayer's transactions since start: broadcast, replaced (higher fee), cancelled (would revert), mined, reverted (gas paid for nothing)",
    labelNames: ["outcome"],
    registers: [ctx.metrics],
    collect() {
      this.reset();
      for (const [outcome, count] of Object.entries(ctx.chain.transactionStats())) this.inc({ outcome }, count);
    },
  });

  router.get("/healthz", async (_req, res) => {
    const status = ctx.syncer.status();
    const recent = status.lastContactAt !== null && ctx.clock() - status.lastContactAt <= Math.max(5_000, 4 * ctx.settings.syncPollMs);
    const chainOk = status.chainOk && recent;
    const [cacheOk, mailboxOk, redisOk, funds] = await Promise.all([
      healthy(() => ctx.cache.ping()),
      healthy(() => ctx.mailbox.ping()),
      ctx.bus ? healthy(() => ctx.bus!.ping()) : Promise.resolve(true),
      relayerFunds(),
    ]);
    // Lag within a few blocks of the confirmations is normal between polls.
    const syncOk = !status.stale && status.lastContactAt !== null && status.lagBlocks <= ctx.settings.syncConfirmations + 5;
    const ok = chainOk && cacheOk && mailboxOk && redisOk && syncOk;
    res.status(ok ? 200 : 503).json({
      status: ok ? "ok" : "degraded",
      chain: { ok: chainOk, ...(status.headBlock !== null ? { blockNumber: status.headBlock } : {}) },
      storage: { ok: cacheOk && mailboxOk, kind: ctx.cache.kind },
      redis: { ok: redisOk, enabled: !!ctx.bus },
      sync: { syncedBlock: status.syncedBlock, lagBlocks: status.lagBlocks, stale: status.stale },
      // A low balance does not make the relay unhealthy (messaging goes on); it is shown for the operator.
      relayer: {
        address: ctx.chain.relayerAddress,
        ...(funds ? { balanceWei: funds.balanceWei.toString(), warnBelowWei: funds.warnBelowWei.toString(), low: funds.low } : {}),
      },
    });
  });

  router.get("/metrics", async (req, res) => {
    if (ctx.metricsToken && !bearerMatches(req, ctx.metricsToken)) {
      res.setHeader("WWW-Authenticate", 'Bearer realm="metrics"');
      return sendError(res, new ChatError("UNAUTHORIZED", "/metrics needs Authorization: Bearer <METRICS_TOKEN>"));
    }
    res.setHeader("content-type", ctx.metrics.contentType);
    res.send(await fromStorage(ctx.metrics.metrics()));
  });

  router.get("/v1/info", async (_req, res) => {
    res.json({
      protocolVersion: PROTOCOL_VERSION,
      chainId: (await ctx.chain.chainId()).toString(),
      contractAddress: ctx.chain.contractAddress,
      maxFrameBytes: ctx.settings.maxFrameBytes,
      mailboxTtlMs: ctx.settings.mailboxTtlMs,
    });
  });

  return router;
}
