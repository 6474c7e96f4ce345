import { spawn, type ChildProcess } from "node:child_process";
import { HDNodeWallet } from "ethers";
import { fetchChainId } from "../../chain/rpc";
import { freePort } from "./ports";

/** anvil's well-known development mnemonic (never use it outside a local chain). */
export const ANVIL_MNEMONIC = "test test test test test test test test test test test junk";

/** The private key of anvil's development account `index`. */
export function anvilPrivateKey(index: number): string {
  return HDNodeWallet.fromPhrase(ANVIL_MNEMONIC, undefined, `m/44'/60'/0'/0/${index}`).privateKey;
}

export interface AnvilNode {
  url: string;
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Starts a real anvil (from the pinned npm package) on a free loopback port. */
export async function startAnvil(options: { stateFile?: string; blockTime?: number; port?: number } = {}): Promise<AnvilNode> {
  const port = options.port ?? (await freePort());
  const binary = require.resolve("@foundry-rs/anvil-linux-amd64/bin/anvil");
  const args = ["--host", "127.0.0.1", "--port", String(port), "--silent"];
  if (options.stateFile) args.push("--state", options.stateFile, "--state-interval", "1");
  if (options.blockTime) args.push("--block-time", String(options.blockTime));
  const child = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (chunk) => (stderr += chunk));
  const url = `http://127.0.0.1:${port}`;
  const started = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`anvil exited (${child.exitCode}): ${stderr}`);
    try {
      await fetchChainId(url, { timeoutMs: 2000 });
      break;
    } catch {
      if (Date.now() - started > 15_000) throw new Error(`anvil did not start on ${url}: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    url,
    port,
    process: child,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}
