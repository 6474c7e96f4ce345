/**
 * Assembles the relay from its parts: an express 5 app with the HTTP API, the messaging half
 * (WebSocket on the same server), and the chain cache sync, on HTTPS (or plain HTTP when no TLS material
 * is given). Every part is passed in, so tests build it with real or in-memory stores and a real chain.
 */
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import express from "express";
import type { Logger } from "pino";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { ChatError } from "../protocol/errors";
import type { MessageBus } from "./bus/bus";
import type { RegistryChain } from "./chain/registry";
import { createSyncer, type Syncer } from "./chain/sync";
import type { RelayConfig } from "./config";
import { accountRoutes } from "./http/accounts";
import type { HttpContext } from "./http/context";
import { errorHandler, sendError } from "./http/errors";
import { keyRoutes } from "./http/keys";
import { loginRoutes } from "./http/login";
import { opsRoutes } from "./http/ops";
import { RateLimiter } from "./http/rate-limit";
import type { CacheStore } from "./storage/cache-types";
import type { Mailbox } from "./storage/mailbox";
import { attachMessaging, type Messaging, type MessagingLimits } from "./ws/attach";

export type RelayServerConfig = Pick<
  RelayConfig,
  | "host"
  | "port"
  | "credentialPepper"
  | "sessionSecret"
  | "sessionTtlMs"
  | "challengeTtlMs"
  | "rateLimitWindowMs"
  | "loginRateLimit"
  | "registerRateLimit"
  | "deployBlock"
  | "syncPollMs"
  | "syncBlockRange"
  | "syncConfirmations"
  | "maxFrameBytes"
  | "mailboxTtlMs"
  | "trustProxy"
>;

export interface RelayDeps {
  config: RelayServerConfig;
  chain: RegistryChain;
  cache: CacheStore;
  mailbox: Mailbox;
  bus?: MessageBus;
  logger: Logger;
  clock?: () => number;
  /** PEM certificate and key; null serves plain HTTP. */
  tls: { cert: string; key: string } | null;
  metrics?: Registry;
  /** Extra messaging limits (rates, ping interval) beyond maxFrameBytes and mailboxTtlMs. */
  messagingLimits?: Partial<MessagingLimits>;
  /** How long a write waits for the cache to show it; default 10 s. */
  writeSyncWaitMs?: number;
}

export interface Relay {
  app: express.Express;
  server: http.Server | https.Server;
  syncer: Syncer;
  metrics: Registry;
  /** Migrates the cache and mailbox tables, starts the sync, and listens on HOST:PORT. */
  listen(): Promise<{ url: string; port: number }>;
  close(): Promise<void>;
}

export function createRelay(deps: RelayDeps): Relay {
  const { config, chain, cache, mailbox, bus } = deps;
  const clock = deps.clock ?? Date.now;
  const logger = deps.logger;
  const metrics = deps.metrics ?? new Registry();
  collectDefaultMetrics({ register: metrics, prefix: "chat_relay_" });

  const syncer = createSyncer({
    chain,
    cache,
    deployBlock: config.deployBlock,
    pollMs: config.syncPollMs,
    blockRange: config.syncBlockRange,
    confirmations: config.syncConfirmations,
    logger: logger.child({ component: "sync" }),
    clock,
  });

  const failedLogins = new Counter({
    name: "chat_relay_failed_logins_total",
    help: "Failed login and reset password checks, by reason",
    labelNames: ["reason"] as const,
    registers: [metrics],
  });
  const httpRequests = new Counter({
    name: "chat_relay_http_requests_total",
    help: "HTTP requests by route and status",
    labelNames: ["route", "status"] as const,
    registers: [metrics],
  });
  new Gauge({
    name: "chat_relay_sync_lag_blocks",
    help: "Blocks between the chain head and the last block in the cache",
    registers: [metrics],
    collect() {
      this.set(syncer.status().lagBlocks);
    },
  });
  new Gauge({
    name: "chat_relay_synced_block",
    help: "Last block whose events are in the cache",
    registers: [metrics],
    collect() {
      this.set(syncer.status().syncedBlock);
    },
  });
  new Gauge({
    name: "chat_relay_cache_stale",
    help: "1 while the cache is refused because the chain changed under it",
    registers: [metrics],
    collect() {
      this.set(syncer.status().stale ? 1 : 0);
    },
  });

  const ctx: HttpContext = {
    chain,
    cache,
    syncer,
    limiter: new RateLimiter(config.rateLimitWindowMs, clock),
    logger,
    clock,
    metrics,
    failedLogins,
    settings: {
      credentialPepper: config.credentialPepper,
      sessionSecret: config.sessionSecret,
      sessionTtlMs: config.sessionTtlMs,
      challengeTtlMs: config.challengeTtlMs,
      loginRateLimit: config.loginRateLimit,
      registerRateLimit: config.registerRateLimit,
      deployBlock: config.deployBlock,
      syncBlockRange: config.syncBlockRange,
      syncConfirmations: config.syncConfirmations,
      syncPollMs: config.syncPollMs,
      maxFrameBytes: config.maxFrameBytes,
      mailboxTtlMs: config.mailboxTtlMs,
      writeSyncWaitMs: deps.writeSyncWaitMs ?? 10_000,
    },
  };

  const app = express();
  app.disable("x-powered-by");
  if (config.trustProxy !== null) {
    const hops = Number(config.trustProxy);
    app.set("trust proxy", Number.isInteger(hops) ? hops : config.trustProxy);
  }
  app.use((req, res, next) => {
    const started = performance.now();
    res.on("finish", () => {
      const route = req.route?.path ? String(req.route.path) : "unmatched";
      httpRequests.inc({ route, status: String(res.statusCode) });
      const quiet = route === "/healthz" || route === "/metrics";
      // Method, route and status only: bodies carry credentials and are never logged.
      logger[quiet ? "debug" : "info"]({ method: req.method, route, status: res.statusCode, ms: Math.round(performance.now() - started) }, "http");
    });
    next();
  });
  app.use(express.json({ limit: "16kb" }));
  app.use(opsRoutes({ ...ctx, mailbox, bus }));
  app.use(accountRoutes(ctx));
  app.use(loginRoutes(ctx));
  app.use(keyRoutes(ctx));
  app.use((_req, res) => sendError(res, new ChatError("NOT_FOUND", "no such route")));
  app.use(errorHandler(logger));

  const server = deps.tls ? https.createServer({ cert: deps.tls.cert, key: deps.tls.key, minVersion: "TLSv1.2" }, app) : http.createServer(app);
  let messaging: Messaging | null = null;
  let listening = false;

  return {
    app,
    server,
    syncer,
    metrics,
    async listen() {
      await cache.migrate();
      await mailbox.migrate();
      messaging = attachMessaging({
        server,
        sessionSecret: config.sessionSecret,
        mailbox,
        bus,
        logger,
        clock,
        metrics,
        limits: { maxFrameBytes: config.maxFrameBytes, mailboxTtlMs: config.mailboxTtlMs, ...deps.messagingLimits },
      });
      syncer.start();
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(config.port, config.host, () => {
          server.off("error", reject);
          resolve();
        });
      });
      listening = true;
      const port = (server.address() as AddressInfo).port;
      const host = config.host.includes(":") ? `[${config.host}]` : config.host;
      return { url: `${deps.tls ? "https" : "http"}://${host}:${port}`, port };
    },
    async close() {
      await syncer.stop();
      await messaging?.close();
      messaging = null;
      if (listening) {
        listening = false;
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
      }
    },
  };
}
