/**
 * The relay's server: an express 5 app with the HTTP API and the messaging half (WebSocket on the same
 * server), on HTTPS (or plain HTTP when no TLS material is given). Its parts (stores, chain, syncer, bus)
 * are built and closed by relay/stack.ts; this file only serves them.
 */
import http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import express from "express";
import type { Logger } from "pino";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { ChatError } from "../protocol/errors";
import type { MessageBus } from "./bus/bus";
import type { RegistryChain } from "./chain/registry";
import type { Syncer } from "./chain/sync";
import type { RelayConfig } from "./config";
import { accountRoutes } from "./http/accounts";
import { createDeliveryService } from "./http/delivery-service";
import { deviceRoutes } from "./http/devices";
import type { HttpContext } from "./http/context";
import { errorHandler, sendError } from "./http/errors";
import { keyRoutes } from "./http/keys";
import { loginRoutes } from "./http/login";
import { messageRoutes } from "./http/messages";
import { opsRoutes } from "./http/ops";
import { webClientRoutes } from "./http/web-client";
import type { AttemptLimits } from "./limits/create";
import type { SessionGuard } from "./sessions";
import type { SessionRevocations } from "./storage/revocations";
import type { CacheStore } from "./storage/cache-types";
import type { Mailbox } from "./storage/mailbox";
import type { SerialBatcherStats } from "./storage/serial-batcher";
import { attachMessaging, type Messaging, type MessagingLimits } from "./ws/attach";
import { mailboxDepthGauge } from "./ws/metrics";
import { createUserDirectory } from "./ws/user-directory";

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
  | "appendsPerUser"
  | "deployBlock"
  | "syncPollMs"
  | "syncBlockRange"
  | "syncConfirmations"
  | "maxFrameBytes"
  | "mailboxTtlMs"
  | "trustProxy"
  | "bounds"
  | "messagingBounds"
  | "maxDevicesPerUser"
  | "deviceLinkTtlMs"
  | "webClient"
>;

export interface RelayDeps {
  config: RelayServerConfig;
  chain: RegistryChain;
  cache: CacheStore;
  mailbox: Mailbox;
  /** The MLS Delivery Service store behind /v2 (migrated by the caller); without it /v2 answers 404. */
  deliveryService?: import("./storage/ds-types").DeliveryServiceStore;
  /** Each user's devices and link requests (migrated by the caller); without it the device routes answer 404. */
  devices?: import("./storage/devices-types").DeviceStore;
  bus?: MessageBus;
  /** Keeps `cache` true to the chain; started by listen(), stopped by close(). */
  syncer: Syncer;
  logger: Logger;
  /** attempt limits and password backoff shared by every instance (built and closed by relay/stack.ts) */
  limits: Pick<AttemptLimits, "limiter" | "backoff">;
  /** session checks and the session events of every instance (built and closed by relay/stack.ts) */
  sessions: SessionGuard;
  revocations: Pick<SessionRevocations, "onEvent">;
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

  // Registered before messaging attaches (which reuses it), so that the configured refresh applies.
  mailboxDepthGauge(metrics, () => mailbox.depth(), config.bounds.metricsDepthRefreshMs);
  const refusedConnections = new Counter({
    name: "chat_relay_connections_refused_total",
    help: "TCP connections closed on accept because a cap was reached, by cap",
    labelNames: ["cap"] as const,
    registers: [metrics],
  });

  const appendBatchStats = deps.deliveryService?.appendBatchStats?.bind(deps.deliveryService);
  if (appendBatchStats) appendBatchMetrics(metrics, appendBatchStats);

  const ctx: HttpContext = {
    chain,
    cache,
    syncer,
    limits: deps.limits,
    sessions: deps.sessions,
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
      appendsPerUser: config.appendsPerUser,
      deployBlock: config.deployBlock,
      syncBlockRange: config.syncBlockRange,
      syncConfirmations: config.syncConfirmations,
      syncPollMs: config.syncPollMs,
      maxFrameBytes: config.maxFrameBytes,
      mailboxTtlMs: config.mailboxTtlMs,
      writeSyncWaitMs: deps.writeSyncWaitMs ?? 10_000,
    },
  };

  // Who is registered: one directory for refusing sends to unknown names and for key lookups of them.
  const users = createUserDirectory({
    cache,
    chain,
    clock,
    settings: { missingTtlMs: config.messagingBounds.unknownUserTtlMs, maxEntries: config.messagingBounds.userDirectoryMaxEntries },
  });

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
  if (deps.devices) {
    // before the Delivery Service: its session gate covers every /v2 route
    const forgetKeyPackages = deps.deliveryService && ((device: { username: string; deviceId: string }) => deps.deliveryService!.removeDevice(device));
    app.use(deviceRoutes(ctx, deps.devices, { maxDevicesPerUser: config.maxDevicesPerUser, deviceLinkTtlMs: config.deviceLinkTtlMs }, forgetKeyPackages));
  }
  // Notices go out through messaging once it listens.
  const deliveryService =
    deps.deliveryService &&
    createDeliveryService(
      ctx,
      deps.deliveryService,
      (usernames, notice, origin) => messaging?.notify(usernames, notice, origin),
      (usernames, text, origin) => messaging?.notifyEarly(usernames, text, origin),
    );
  // before the 16 kB parser: /v2 bodies carry welcomes
  if (deliveryService) app.use(deliveryService.routes);
  app.use(express.json({ limit: "16kb" }));
  app.use(opsRoutes({ ...ctx, mailbox, bus, metricsToken: config.bounds.metricsToken }));
  app.use(accountRoutes(ctx));
  app.use(loginRoutes(ctx, { devices: deps.devices }));
  app.use(keyRoutes(ctx, { users, missesPerAddress: config.messagingBounds.keysMissesPerAddress }));
  app.use(messageRoutes({ ...ctx, mailbox }));
  const webClientDir = config.webClient.dir;
  if (webClientDir !== null) app.use(webClientRoutes({ settings: { ...config.webClient, dir: webClientDir }, chain }));
  app.use((_req, res) => sendError(res, new ChatError("NOT_FOUND", "no such route")));
  app.use(errorHandler(logger));

  const server = createBoundedServer({ tls: deps.tls, app, bounds: config.bounds, refused: refusedConnections });
  let messaging: Messaging | null = null;
  let listening = false;

  return {
    async listen() {
      messaging = attachMessaging({
        server,
        sessions: deps.sessions,
        onSessionEvent: deps.revocations.onEvent,
        mailbox,
        bus,
        logger,
        clock,
        metrics,
        users,
        moveCursor: deliveryService?.moveCursor,
        appendApplication: deliveryService?.appendApplication,
        appendsInCallOrder: deliveryService?.appendsInCallOrder,
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

/**
 * The HTTP(S) server with bounds on what one client can hold: a slow client (headers or body a byte at a
 * time, or a TLS handshake never finished) is cut after the header or request timeout, an idle kept-alive
 * connection after the keep-alive timeout, and connections beyond the per-address or global cap are closed
 * as they are accepted, before any TLS work. Upgraded (WebSocket) connections count against both caps for
 * as long as they are open; the timeouts stop applying to them once upgraded.
 *
 * Behind a reverse proxy every connection comes from the proxy's address, so the per-address cap then
 * bounds the proxy: raise it there and cap per client at the proxy.
 */
function createBoundedServer(params: {
  tls: { cert: string; key: string } | null;
  app: express.Express;
  bounds: RelayServerConfig["bounds"];
  refused: Counter<"cap">;
}): http.Server {
  const { bounds } = params;
  const timeouts = {
    headersTimeout: bounds.httpHeadersTimeoutMs,
    requestTimeout: bounds.httpRequestTimeoutMs,
    keepAliveTimeout: bounds.httpKeepAliveTimeoutMs,
    // Node checks the two timeouts every this often (30 s by default, which would let a short timeout run
    // long); at an eighth of the header timeout a slow client was cut within about 1.1 times it in tests.
    connectionsCheckingInterval: Math.max(100, Math.min(1_000, Math.floor(bounds.httpHeadersTimeoutMs / 8))),
  };
  const server = params.tls
    ? https.createServer({ cert: params.tls.cert, key: params.tls.key, minVersion: "TLSv1.2", handshakeTimeout: bounds.httpHeadersTimeoutMs, ...timeouts }, params.app)
    : http.createServer(timeouts, params.app);
  server.headersTimeout = timeouts.headersTimeout;
  server.requestTimeout = timeouts.requestTimeout;
  server.keepAliveTimeout = timeouts.keepAliveTimeout;
  // The global cap: Node closes the accepted socket itself and emits "drop".
  server.maxConnections = bounds.httpMaxConnections;
  server.on("drop", () => params.refused.inc({ cap: "global" }));

  const openByAddress = new Map<string, number>();
  // Prepended so that a refused socket is closed before the TLS layer starts a handshake on it.
  server.prependListener("connection", (socket: Socket) => {
    const address = normalisedAddress(socket.remoteAddress);
    const open = openByAddress.get(address) ?? 0;
    if (open >= bounds.httpMaxConnectionsPerAddress) {
      params.refused.inc({ cap: "per_address" });
      socket.destroy();
      return;
    }
    openByAddress.set(address, open + 1);
    socket.once("close", () => {
      const left = (openByAddress.get(address) ?? 1) - 1;
      if (left <= 0) openByAddress.delete(address);
      else openByAddress.set(address, left);
    });
  });
  return server;
}

/** An IPv4 client seen on a dual-stack socket (::ffff:1.2.3.4) is the same client as 1.2.3.4. */
function normalisedAddress(address: string | undefined): string {
  if (!address) return "unknown";
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/**
 * The store's batches of application appends, read at each scrape. The rate of the busy seconds is the share
 * of time a batch was in flight: near 1, every append waits for the batch before it, and a stall of the
 * database shows at once as latency (this is where the relay's 1:1 capacity ends on a small machine).
 */
function appendBatchMetrics(registry: Registry, stats: () => SerialBatcherStats): void {
  const counter = (name: string, help: string, value: (totals: SerialBatcherStats) => number) => {
    let reported = 0;
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        const now = value(stats());
        if (now > reported) this.inc(now - reported);
        reported = Math.max(reported, now);
      },
    });
  };
  counter("chat_ds_append_batches_total", "Batches the store wrote application appends in (one round trip and one commit each)", (t) => t.flushes);
  counter("chat_ds_append_batch_items_total", "Application appends written in those batches", (t) => t.items);
  counter("chat_ds_append_batch_busy_seconds_total", "Time a batch of application appends was in flight", (t) => t.busyMs / 1000);
}
