/**
 * bench:sync — from a registration's receipt to its row in the relay's MySQL cache (users table).
 *
 *   npm run bench:sync -- [--samples 10] [--block-time-samples 5] [--poll-ms 0]
 *
 * A real anvil with ChatRegistry, a fresh MariaDB database, and the operator's relay process
 * (relay/main.ts) syncing into it with its default SYNC_POLL_MS (500 ms; `--poll-ms N` overrides).
 * Each sample sends `register` straight to the contract from the relayer account (as another relay
 * instance would: this relay learns of it only through its event sync, not through its own
 * /v1/register, which waits for its cache before answering), then watches, every 5 ms, both the receipt
 * and the users row: milliseconds from receipt seen to row seen, and blocks between the receipt's
 * block and the head when the row appeared. Samples start at random phases of the poll interval.
 * Runs with automine (a block per transaction), then with a block a second (anvil's interval mining) unless
 * --block-time-samples 0. Last line: one JSON object (medians, and every sample).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { NonceManager, Wallet, hexlify, type TransactionReceipt } from "ethers";
import mysql from "mysql2/promise";
import { registryDomain } from "../protocol/eip712";
import { connectRegistry } from "../chain/registry";
import { createRpcProvider } from "../chain/rpc";
import { newIdentity, signRegister } from "../test/contract/signing";
import { startAnvil } from "../test/helpers/anvil";
import { createTestDatabase } from "../test/helpers/mysql";
import { deployRegistry } from "../test/helpers/registry";
import { startRelayProcess } from "../test/helpers/relay-process";
import { log, machine, median, options, result, round, sleep } from "./lib";

const opts = options({ samples: 10, "block-time-samples": 5, "poll-ms": 0 });
const RELAY_DEFAULT_POLL_MS = 500; // relay/config.ts SYNC_POLL_MS default

async function runMode(blockTime: number, samples: number) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "bench-sync-"));
  const cleanups: Array<() => Promise<unknown>> = [() => rm(dir, { recursive: true, force: true })];
  try {
    // Deployed under automine, then switched to a block every `blockTime` s (what `anvil --block-time`
    // sets): deployRegistry's receipt wait leaves a block poll in flight when it destroys its provider,
    // which crashes the process if the receipt had to be waited for.
    const anvil = await startAnvil();
    cleanups.push(() => anvil.stop());
    const deployed = await deployRegistry({ rpcUrl: anvil.url });
    const db = await createTestDatabase("chat_bench");
    cleanups.push(() => db.drop());
    const relay = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: deployed.address,
      deployBlock: deployed.deployBlock,
      relayerKey: deployed.relayerKey,
      mysqlUrl: db.url,
      dataDir: dir,
      // empty = unset: the relay's own default
      env: { SYNC_POLL_MS: opts["poll-ms"] ? String(opts["poll-ms"]) : "", LOG_LEVEL: "warn" },
    });
    cleanups.push(() => relay.stop());
    const pool = mysql.createPool({ uri: db.url, connectionLimit: 2 });
    cleanups.push(() => pool.end());
    // Uncached: a cached "no receipt yet" or head block would delay what this benchmark times.
    const provider = createRpcProvider(anvil.url, deployed.chainId, { pollingIntervalMs: 50 });
    cleanups.push(async () => provider.destroy());
    if (blockTime) await provider.send("evm_setIntervalMining", [blockTime]);
    const relayer = new NonceManager(new Wallet(deployed.relayerKey, provider));
    const registry = connectRegistry(deployed.address, relayer);
    const domain = registryDomain({ chainId: deployed.chainId, verifyingContract: deployed.address });
    const pollMs = opts["poll-ms"] || RELAY_DEFAULT_POLL_MS;

    const out: { ms: number; blocks: number }[] = [];
    for (let i = 0; i < samples; i++) {
      await sleep(Math.random() * pollMs); // a random phase of the relay's poll timer
      const username = `sync_${i}_${randomBytes(4).toString("hex")}`;
      const identity = newIdentity();
      const credentialHash = hexlify(randomBytes(32));
      const deadline = BigInt(Math.floor(Date.now() / 1000) + 3600);
      const signature = signRegister({ domain, signer: identity, username, credentialHash, deadline });
      const tx = await registry.register(username, credentialHash, identity.publicKey, deadline, signature);

      let receipt: { at: number; block: number } | null = null;
      let row: { at: number; head: number } | null = null;
      const deadlineAt = performance.now() + 30_000;
      while (!receipt || !row) {
        if (performance.now() > deadlineAt) throw new Error(`sample ${i}: no ${receipt ? "users row" : "receipt"} within 30 s`);
        const [r, [rows]]: [TransactionReceipt | null, [unknown[]]] = await Promise.all([
          receipt ? null : provider.getTransactionReceipt(tx.hash),
          row ? [[]] : (pool.query("SELECT 1 FROM users WHERE username = ?", [username]) as Promise<any>),
        ]);
        const now = performance.now();
        if (!receipt && r) receipt = { at: now, block: r.blockNumber };
        if (!row && (rows as unknown[]).length > 0) row = { at: now, head: await provider.getBlockNumber() };
        if (!receipt || !row) await sleep(5);
      }
      // The row can be seen in the same poll as the receipt: 0 ms then (never negative).
      const sample = { ms: round(Math.max(0, row.at - receipt.at), 1), blocks: row.head - receipt.block };
      out.push(sample);
      log(`${blockTime ? `block time ${blockTime} s` : "automine"} sample ${i}: ${sample.ms} ms, ${sample.blocks} blocks`);
    }
    return {
      samples: out.length,
      median_ms: median(out.map((s) => s.ms)),
      max_ms: Math.max(...out.map((s) => s.ms)),
      median_blocks: median(out.map((s) => s.blocks)),
      max_blocks: Math.max(...out.map((s) => s.blocks)),
      all_ms: out.map((s) => s.ms),
      all_blocks: out.map((s) => s.blocks),
    };
  } finally {
    for (const f of cleanups.reverse()) await f().catch((error) => log(`cleanup: ${error?.message ?? error}`));
  }
}

async function main() {
  log("automine ...");
  const automine = await runMode(0, opts.samples);
  let blockTime1: Awaited<ReturnType<typeof runMode>> | null = null;
  if (opts["block-time-samples"] > 0) {
    log("a block a second (anvil interval mining) ...");
    blockTime1 = await runMode(1, opts["block-time-samples"]);
  }
  result({
    bench: "sync",
    date: new Date().toISOString(),
    machine: machine(),
    relay: "relay/main.ts, MySQL cache, registration sent to the contract directly (seen through the event sync)",
    sync_poll_ms: opts["poll-ms"] || RELAY_DEFAULT_POLL_MS,
    automine,
    block_time_1s: blockTime1,
    goal_within_one_block_met: automine.max_blocks <= 1 && (blockTime1 ? blockTime1.max_blocks <= 1 : true),
  });
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
