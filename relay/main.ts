/**
 * The relay process: the only reader of process.env (dotenv's .env, then the environment, which wins).
 *   npm run relay              serve
 *   npm run relay -- resync    empty the chain cache tables, rebuild them from DEPLOY_BLOCK, exit
 * A missing or malformed setting stops with one line naming it (exit 1).
 */
import { mkdir } from "node:fs/promises";
import { config as loadDotenv } from "dotenv";
import pino from "pino";
import { createRedisBus } from "./bus/redis";
import type { MessageBus } from "./bus/bus";
import { createEthersChain } from "./chain/registry";
import { createSyncer } from "./chain/sync";
import { ConfigError, parseConfig, type RelayConfig } from "./config";
import { createRelay } from "./server";
import { createMemoryCache } from "./storage/cache-memory";
import { createMysqlCache } from "./storage/cache-mysql";
import type { CacheStore } from "./storage/cache-types";
import { createMemoryMailbox } from "./storage/mailbox-memory";
import { createMysqlMailbox } from "./storage/mailbox-mysql";
import { createMysqlPool } from "./storage/mysql-pool";
import { loadOrCreateCertificate } from "./tls";

const USAGE = "usage: relay [serve | resync]";

function fatal(line: string): never {
  process.stderr.write(`relay: ${line}\n`);
  process.exit(1);
}

function readConfig(): RelayConfig {
  loadDotenv({ quiet: true });
  try {
    return parseConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) fatal(error.message);
    throw error;
  }
}

async function resync(config: RelayConfig, logger: pino.Logger): Promise<void> {
  const chain = createEthersChain({ rpcUrl: config.rpcUrl, contractAddress: config.contractAddress, privateKey: config.privateKey, logger });
  const pool = config.mysqlUrl ? createMysqlPool(config.mysqlUrl, { connectionLimit: 4 }) : null;
  try {
    if (!pool) fatal("resync needs MYSQL_URL: the in-memory cache is rebuilt on every start anyway");
    const cache = createMysqlCache(pool);
    await cache.migrate();
    await cache.truncate();
    const syncer = createSyncer({
      chain,
      cache,
      deployBlock: config.deployBlock,
      pollMs: config.syncPollMs,
      blockRange: config.syncBlockRange,
      confirmations: config.syncConfirmations,
      logger,
    });
    const started = Date.now();
    await syncer.rebuild("resync command");
    const status = syncer.status();
    if (status.stale) fatal(`resync failed: ${status.staleReason}`);
    logger.info({ syncedBlock: status.syncedBlock, users: await cache.countUsers(), ms: Date.now() - started }, "resync done");
  } finally {
    await chain.close();
    await pool?.end();
  }
}

async function serve(config: RelayConfig, logger: pino.Logger): Promise<void> {
  await mkdir(config.dataDir, { recursive: true });
  const tls = config.insecureHttp
    ? null
    : await loadOrCreateCertificate({ certFile: config.tlsCertFile, keyFile: config.tlsKeyFile, dataDir: config.dataDir, host: config.host });
  if (tls) logger.info({ certificate: tls.certFile, source: tls.source }, "TLS certificate");
  else logger.warn("INSECURE_HTTP=1: serving plain HTTP; anyone on the network can read and change traffic (local development only)");

  const chain = createEthersChain({ rpcUrl: config.rpcUrl, contractAddress: config.contractAddress, privateKey: config.privateKey, logger });
  const pool = config.mysqlUrl ? createMysqlPool(config.mysqlUrl) : null;
  if (!pool) logger.warn("MYSQL_URL is not set: users cache and mailbox are in memory; nothing survives a restart");
  const cache: CacheStore = pool ? createMysqlCache(pool) : createMemoryCache();
  const mailbox = pool ? createMysqlMailbox(pool) : createMemoryMailbox();
  let bus: MessageBus | undefined;
  if (config.redisUrl) bus = createRedisBus(config.redisUrl, { logger });
  else logger.info("REDIS_URL is not set: single relay instance");

  try {
    if (!(await chain.isRelayer())) {
      logger.warn({ account: chain.relayerAddress }, "this account is not an authorised relayer: registrations and resets will fail with FORBIDDEN");
    }
  } catch {
    logger.warn("chain unreachable at start; the relay serves and retries (chain requests answer 503 meanwhile)");
  }

  const relay = createRelay({ config, chain, cache, mailbox, bus, logger, tls: tls ? { cert: tls.cert, key: tls.key } : null });
  let address: { url: string };
  try {
    address = await relay.listen();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") fatal(`PORT ${config.port} on ${config.host} is already in use`);
    if (code === "EACCES") fatal(`not allowed to listen on ${config.host}:${config.port}`);
    if (code === "ECONNREFUSED" || code === "ER_ACCESS_DENIED_ERROR" || code === "ER_BAD_DB_ERROR") {
      fatal(`MYSQL_URL: cannot use the database (${code})`);
    }
    throw error;
  }
  logger.info({ url: address.url, account: chain.relayerAddress, contract: config.contractAddress, storage: cache.kind, redis: !!bus }, "relay listening");

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping");
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    await relay.close().catch((error) => logger.error({ err: String(error?.message ?? error) }, "close failed"));
    await mailbox.close().catch(() => undefined);
    await bus?.close().catch(() => undefined);
    await cache.close().catch(() => undefined);
    await pool?.end().catch(() => undefined);
    await chain.close();
    process.exit(0);
  };
  process.once("SIGINT", () => void stop("SIGINT"));
  process.once("SIGTERM", () => void stop("SIGTERM"));
}

async function main() {
  const args = process.argv.slice(2);
  const command = args[0] ?? "serve";
  if (args.length > 1 || !["serve", "resync"].includes(command)) fatal(USAGE);
  const config = readConfig();
  // JSON lines on stdout; credentials, tokens and keys are never passed to the logger.
  const logger = pino({ level: config.logLevel, base: { service: "relay" } });
  if (command === "resync") {
    await resync(config, logger);
    process.exit(0);
  }
  await serve(config, logger);
}

main().catch((error) => {
  fatal(`stopped: ${error?.message ?? String(error)}`);
});
