/**
 * The one place where a relay is assembled from its settings: the MySQL pool, the users cache and the
 * mailbox over it (or in memory without MYSQL_URL), the Redis bus, the chain, the syncer that keeps the
 * cache true to the chain, the attempt limits and session revocations (shared through Redis or MySQL),
 * the TLS material, and the server. relay/main.ts, the benchmark's relay and the
 * in-process test relays all call createRelayStack, and one close() releases everything it built.
 */
import path from "node:path";
import type { Pool } from "mysql2/promise";
import type { Logger } from "pino";
import { createRedisBus } from "./bus/redis";
import type { MessageBus } from "./bus/bus";
import { createEthersChain, type RegistryChain } from "./chain/registry";
import { createAttemptLimits, type AttemptLimits } from "./limits/create";
import { SessionGuard } from "./sessions";
import { createSessionRevocations, type SessionRevocations } from "./storage/revocations";
import { createSyncer, type Syncer } from "./chain/sync";
import type { RelayConfig } from "./config";
import { createRelay } from "./server";
import { createMemoryCache } from "./storage/cache-memory";
import { createMysqlCache } from "./storage/cache-mysql";
import type { CacheStore } from "./storage/cache-types";
import type { Mailbox } from "./storage/mailbox";
import { createMemoryMailbox } from "./storage/mailbox-memory";
import { createMysqlMailbox } from "./storage/mailbox-mysql";
import { createFileMailbox } from "./storage/mailbox-file";
import { createFileDeliveryServiceStore } from "./storage/ds-file";
import { createMemoryDeliveryServiceStore } from "./storage/ds-memory";
import { createMysqlDeliveryServiceStore } from "./storage/ds-mysql";
import { createMysqlPool } from "./storage/mysql-pool";
import { createMemoryDeviceStore } from "./storage/devices-memory";
import { createMysqlDeviceStore } from "./storage/devices-mysql";
import type { DeviceStore } from "./storage/devices-types";
import { loadOrCreateCertificate } from "./tls";
import type { MessagingLimits } from "./ws/attach";

/** The chain half of a relay: what `relay resync` needs, and what the server answers keys from. */
export interface ChainCache {
  /** null without MYSQL_URL */
  pool: Pool | null;
  cache: CacheStore;
  chain: RegistryChain;
  syncer: Syncer;
}

/**
 * The cache as the syncer sees it: once a range of events is applied, the users whose key or credential
 * changed are reported (by username hash), so that their sessions can be re-checked.
 */
function reportingAccountChanges(cache: CacheStore, onAccountsChanged: (usernameHashes: string[]) => void): CacheStore {
  const applyEvents: CacheStore["applyEvents"] = async (params) => {
    const applied = await cache.applyEvents(params);
    if (applied) {
      const changed = new Set(params.events.filter((e) => e.type !== "registered").map((e) => e.usernameHash));
      if (changed.size > 0) onAccountsChanged([...changed]);
    }
    return applied;
  };
  return new Proxy(cache, {
    get(target, property) {
      if (property === "applyEvents") return applyEvents;
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** Builds the pool, the cache over it (memory without MYSQL_URL), the chain and its syncer. Nothing is opened yet. */
export function createChainCache(params: {
  config: RelayConfig;
  logger: Logger;
  poolConnectionLimit?: number;
  /** told after each applied range which users' keys or credentials changed */
  onAccountsChanged?: (usernameHashes: string[]) => void;
}): ChainCache {
  const { config, logger } = params;
  const chain = createEthersChain({ rpcUrl: config.rpcUrl, contractAddress: config.contractAddress, privateKey: config.privateKey, logger, gas: config.gas });
  const pool = config.mysqlUrl ? createMysqlPool(config.mysqlUrl, { connectionLimit: params.poolConnectionLimit }) : null;
  const cache = pool ? createMysqlCache(pool) : createMemoryCache();
  const syncer = createSyncer({
    chain,
    cache: params.onAccountsChanged ? reportingAccountChanges(cache, params.onAccountsChanged) : cache,
    deployBlock: config.deployBlock,
    pollMs: config.syncPollMs,
    blockRange: config.syncBlockRange,
    confirmations: config.syncConfirmations,
    logger: logger.child({ component: "sync" }),
  });
  return { pool, cache, chain, syncer };
}

/** What tests and benchmarks change; everything else follows the settings. */
export interface RelayStackOverrides {
  poolConnectionLimit?: number;
  /** How long a write waits for the cache to show it; default 10 s. */
  writeSyncWaitMs?: number;
  /** Messaging limits beyond MAX_FRAME_BYTES and the mailbox TTL (the benchmark raises the send rate). */
  messagingLimits?: Partial<MessagingLimits>;
  /** Keep the mailbox in memory instead of the durable file log (in-process tests that start many relays). */
  memoryMailbox?: boolean;
}

export interface RelayStack extends ChainCache {
  config: RelayConfig;
  mailbox: Mailbox;
  bus: MessageBus | null;
  limits: AttemptLimits;
  revocations: SessionRevocations;
  devices: DeviceStore;
  /** Migrates the tables, starts the sync, the mailbox purge and messaging, and listens on HOST:PORT. */
  listen(): Promise<{ url: string; port: number }>;
  /** Closes the server, then the mailbox, bus, cache, pool and chain; safe to call more than once. */
  close(): Promise<void>;
}

export async function createRelayStack(params: { config: RelayConfig; logger: Logger; overrides?: RelayStackOverrides }): Promise<RelayStack> {
  const { config, logger } = params;
  const overrides = params.overrides ?? {};
  const tls = config.insecureHttp
    ? null
    : await loadOrCreateCertificate({ certFile: config.tlsCertFile, keyFile: config.tlsKeyFile, dataDir: config.dataDir, host: config.host });
  if (tls) logger.info({ certificate: tls.certFile, source: tls.source }, "TLS certificate");
  else logger.warn("INSECURE_HTTP=1: serving plain HTTP; anyone on the network can read and change traffic (local development only)");

  // Account changes reach every instance's sockets through the revocations' session events (built below).
  let revocations: SessionRevocations | null = null;
  const onAccountsChanged = (usernameHashes: string[]) => {
    for (const usernameHash of usernameHashes) {
      revocations?.announce({ type: "account", usernameHash }).catch((error) => logger.warn({ err: String(error?.message ?? error) }, "could not announce an account change"));
    }
  };
  const parts = createChainCache({ config, logger, poolConnectionLimit: overrides.poolConnectionLimit, onAccountsChanged });
  const { pool, cache, chain, syncer } = parts;
  revocations = createSessionRevocations({ redisUrl: config.redisUrl, pool, maxEntries: config.rateLimitMaxKeys });
  const limits = createAttemptLimits({
    redisUrl: config.redisUrl,
    pool,
    windowMs: config.rateLimitWindowMs,
    maxKeys: config.rateLimitMaxKeys,
    policy: config.passwordBackoff,
    logger: logger.child({ component: "limits" }),
  });
  logger.info({ limits: limits.store, revocations: revocations.kind }, "attempt limits and session revocations");
  const sessions = new SessionGuard({ secret: config.sessionSecret, cache, chain, revocations, clock: Date.now });
  const quota = {
    maxMessages: config.bounds.mailboxQuotaMessages,
    maxBytes: config.bounds.mailboxQuotaBytes,
    retryAfterSeconds: config.bounds.mailboxFullRetryAfterSeconds,
  };
  const mailbox = pool
    ? createMysqlMailbox(pool, { quota })
    : overrides.memoryMailbox
      ? createMemoryMailbox({ quota })
      : createFileMailbox({
          dir: path.join(config.dataDir, "mailbox"),
          quota,
          onEvent: (event) => logger.warn({ event: event.type, file: event.file }, "mailbox log recovered or compacted"),
        });
  if (!pool) {
    logger.info(
      { mailbox: mailbox.kind },
      overrides.memoryMailbox
        ? "MYSQL_URL is not set: users cache and mailbox in memory"
        : "MYSQL_URL is not set: waiting messages are kept in a durable log under DATA_DIR; the users cache is rebuilt from the chain on start",
    );
  }
  const deliveryService = pool
    ? createMysqlDeliveryServiceStore(
        pool,
        (reason) => logger.warn({ reason }, "the delivery service's stored procedures could not be created (CREATE ROUTINE and EXECUTE are needed); using plain statements"),
        {
          onSetBasedUnavailable: (reason) =>
            logger.warn({ reason }, "batches of messages cannot use temporary tables (CREATE TEMPORARY TABLES is needed); using the slower JSON loop"),
        },
      )
    : overrides.memoryMailbox ? createMemoryDeliveryServiceStore() : createFileDeliveryServiceStore({ dir: path.join(config.dataDir, "ds") });
  // Devices are shared state: in MySQL when there is one, else in this process (a lone instance).
  const devices = pool ? createMysqlDeviceStore(pool) : createMemoryDeviceStore();
  const bus = config.redisUrl ? createRedisBus(config.redisUrl, { logger }) : null;
  if (!bus) logger.info("REDIS_URL is not set: single relay instance");

  const relay = createRelay({
    config,
    chain,
    cache,
    mailbox,
    deliveryService,
    devices,
    bus: bus ?? undefined,
    syncer,
    logger,
    limits,
    sessions,
    revocations,
    tls: tls ? { cert: tls.cert, key: tls.key } : null,
    messagingLimits: { ...messagingLimitsOf(config), ...overrides.messagingLimits },
    writeSyncWaitMs: overrides.writeSyncWaitMs,
  });

  // Expired link requests go, and revoked devices once no session of theirs can be alive.
  let deviceSweep: NodeJS.Timeout | null = null;
  const sweepDevices = () => {
    const now = Date.now();
    devices.sweep({ now, revokedBefore: now - config.sessionTtlMs }).catch((error) => logger.warn({ err: String(error?.message ?? error) }, "device sweep failed"));
  };

  // The v2 store's expired key packages and welcomes go, and log entries past DS_LOG_TTL_DAYS that every
  // member has read: without it the log would grow with every message ever sent. One purge at a time; one
  // cut short by close() is simply done again by the next start (it deletes only what is due).
  let dsPurge: NodeJS.Timeout | null = null;
  let dsPurging = false;
  let stopping = false;
  const purgeDeliveryService = () => {
    if (dsPurging) return;
    dsPurging = true;
    deliveryService
      .purge({ now: Date.now(), logTtlMs: config.dsLogTtlMs })
      .then(
        (purged) => {
          if (purged.keyPackages + purged.welcomes + purged.logEntries > 0) logger.info({ purged }, "delivery service purged");
        },
        (error) => {
          if (!stopping) logger.warn({ err: String(error?.message ?? error) }, "delivery service purge failed");
        },
      )
      .finally(() => (dsPurging = false));
  };

  let closed: Promise<void> | null = null;
  return {
    ...parts,
    config,
    mailbox,
    bus,
    limits,
    revocations,
    devices,
    async listen() {
      try {
        if (!(await chain.isRelayer())) {
          logger.warn({ account: chain.relayerAddress }, "this account is not an authorised relayer: registrations and resets will fail with FORBIDDEN");
        }
      } catch {
        logger.warn("chain unreachable at start; the relay serves and retries (chain requests answer 503 meanwhile)");
      }
      await cache.migrate();
      await mailbox.migrate();
      await limits.migrate();
      await revocations!.migrate();
      await deliveryService.migrate();
      await devices.migrate();
      deviceSweep = setInterval(sweepDevices, 60_000);
      deviceSweep.unref();
      dsPurge = setInterval(purgeDeliveryService, config.dsPurgeIntervalMs);
      dsPurge.unref();
      purgeDeliveryService();
      return relay.listen();
    },
    close() {
      closed ??= (async () => {
        if (deviceSweep) clearInterval(deviceSweep);
        stopping = true;
        if (dsPurge) clearInterval(dsPurge);
        await relay.close().catch((error) => logger.error({ err: String(error?.message ?? error) }, "close failed"));
        await mailbox.close().catch(() => undefined);
        await deliveryService.close().catch(() => undefined);
        await devices.close().catch(() => undefined);
        await bus?.close().catch(() => undefined);
        await limits.close().catch(() => undefined);
        await revocations!.close().catch(() => undefined);
        await cache.close().catch(() => undefined);
        await pool?.end().catch(() => undefined);
        await chain.close();
      })();
      return closed;
    },
  };
}

/** The WebSocket bounds from the settings, in the shape messaging takes them. */
function messagingLimitsOf(config: RelayConfig): Partial<MessagingLimits> {
  const { messagingBounds: m } = config;
  return {
    maxConnections: m.maxConnections,
    maxConnectionsPerUser: m.maxConnectionsPerUser,
    maxConnectionsPerAddress: m.maxConnectionsPerAddress,
    maxBufferedBytes: m.maxBufferedBytes,
    maxHeldMessages: m.maxHeldMessages,
    backlogTimeoutMs: m.backlogTimeoutMs,
    pingIntervalMs: m.pingIntervalMs,
    rejectedFrameBurst: m.rejectedFrameBurst,
  };
}
