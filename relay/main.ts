/**
 * The relay process: the only reader of process.env (dotenv's .env, then the environment, which wins).
 *   npm run relay              serve
 *   npm run relay -- resync    empty the chain cache tables, rebuild them from DEPLOY_BLOCK, exit
 * A missing or malformed setting stops with one line naming it (exit 1).
 */
import { MailboxError } from "./storage/mailbox";
import { config as loadDotenv } from "dotenv";
import pino from "pino";
import { ConfigError, parseConfig, type RelayConfig } from "./config";
import { createChainCache, createRelayStack } from "./stack";

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
  if (!config.mysqlUrl) fatal("resync needs MYSQL_URL: the in-memory cache is rebuilt on every start anyway");
  const { pool, cache, chain, syncer } = createChainCache({ config, logger, poolConnectionLimit: 4 });
  try {
    await cache.migrate();
    await cache.truncate();
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
  const stack = await createRelayStack({ config, logger });
  let address: { url: string };
  try {
    address = await stack.listen();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") fatal(`PORT ${config.port} on ${config.host} is already in use`);
    if (code === "EACCES") fatal(`not allowed to listen on ${config.host}:${config.port}`);
    if (code === "ECONNREFUSED" || code === "ER_ACCESS_DENIED_ERROR" || code === "ER_BAD_DB_ERROR") {
      fatal(`MYSQL_URL: cannot use the database (${code})`);
    }
    if (error instanceof MailboxError) fatal(`mailbox in ${config.dataDir}: ${error.message}`);
    throw error;
  }
  logger.info(
    { url: address.url, account: stack.chain.relayerAddress, contract: config.contractAddress, storage: stack.cache.kind, redis: !!stack.bus },
    "relay listening",
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping");
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    await stack.close();
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
