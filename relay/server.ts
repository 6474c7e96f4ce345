/**
 * The relay's server: an express 5 app with the HTTP API and the messaging half (WebSocket on the same
 * server), on HTTPS (or plain HTTP when no TLS material is given). Its parts (stores, chain, syncer, bus)
 * are built and closed by relay/stack.ts; this file only serves them.
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
import type { Syncer } from "./chain/sync";
import type { RelayConfig } from "./config";
import { accountRoutes } from "./http/accounts";
import { deliveryServiceRoutes } from "./http/delivery-service";
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
  /** The MLS Delivery Service store behind /v2 (migrated by the caller); without it /v2 answers 404. */
  deliveryService?: import("./storage/ds-types").DeliveryServiceStore;
  bus?: MessageBus;
  /** Keeps `cache` true to the chain; started by listen(), stopped by close(). */
  syncer: Syncer;
  logger: Logger;
  /** PEM certificate and key; null serves plain HTTP. */
  tls: { cert: string; key: string } | null;
  /** Extra messaging limits (rates, ping interval) beyond maxFrameBytes and mailboxTtlMs. */
  messagingLimits?: Partial<MessagingLimits>;
  /** How long a write waits for the cache to show it; default 10 s. */
  writeSyncWaitMs?: number;
}

export interface Relay {
  /** Starts the sync and messaging and listens on HOST:PORT (the tables must be migrated already). */
  listen(): Promise<{ url: string; port: number }>;
  /** Stops the sync, closes every connection and the server; the parts passed in stay open. */
  close(): Promise<void>;
}

export function createRelay(deps: RelayDeps): Relay {
  const { config, chain, cache, mailbox, bus, syncer, logger } = deps;
  const clock = Date.now;
  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics, prefix: "chat_relay_" });

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
  if (deps.deliveryService) app.use(deliveryServiceRoutes(ctx, deps.deliveryService)); // before the 16 kB parser: /v2 bodies carry welcomes
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
    async listen() {
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
