/** Runs the real `chat` command (bin/chat.js) as a separate process, as a person or a script would. */
import { spawn } from "node:child_process";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { WatchedProcess } from "./watched-process";

const ROOT = path.resolve(__dirname, "../..");

export interface ChatResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON lines (with --json) */
  json: any[];
}

const servedContracts = new Map<string, Promise<string | undefined>>();

/**
 * The contract a test's own relay serves (GET /v1/info, its self-signed certificate not checked): the
 * deployment that test made itself. Undefined when nothing answers (tests of an unreachable relay).
 */
export function contractServedBy(relayUrl: string): Promise<string | undefined> {
  let served = servedContracts.get(relayUrl);
  if (!served) {
    served = new Promise((resolve) => {
      const client = relayUrl.startsWith("https:") ? https : http;
      const request = client.get(`${relayUrl}/v1/info`, { rejectUnauthorized: false, timeout: 5000 }, (response) => {
        let body = "";
        response.on("data", (chunk) => (body += chunk));
        response.on("end", () => {
          try {
            const address = (JSON.parse(body) as { contractAddress?: unknown }).contractAddress;
            resolve(typeof address === "string" ? address : undefined);
          } catch {
            resolve(undefined);
          }
        });
      });
      request.on("error", () => resolve(undefined));
      request.on("timeout", () => request.destroy());
    });
    // A relay that did not answer may answer later: only a found address is remembered.
    void served.then((address) => address === undefined && servedContracts.delete(relayUrl));
    servedContracts.set(relayUrl, served);
  }
  return served;
}

/**
 * `contract`: the ChatRegistry the client is told to trust (--contract). Left out, it is the one the test's
 * own relay serves, which the test deployed itself, so tests that are not about the trust anchor run as
 * a user who passed the right --contract. null: no --contract at all (the client chooses on its own; no
 * CHAT_CONTRACT or DATA_DIR leaks in from this process).
 */
export async function runChat(params: {
  home: string;
  relay: string;
  rpc: string;
  args: string[];
  input?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  contract?: string | null;
}): Promise<ChatResult> {
  const contract = params.contract === undefined ? await contractServedBy(params.relay) : params.contract;
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        path.join(ROOT, "bin/chat.js"),
        "--home",
        params.home,
        "--relay",
        params.relay,
        "--rpc",
        params.rpc,
        ...(contract ? ["--contract", contract] : []),
        ...params.args,
      ],
      {
        cwd: ROOT,
        // Only what the client needs: no developer .env settings leak in (they would lose to the flags anyway).
        env: { PATH: process.env.PATH ?? "", HOME: params.home, ...params.env },
        stdio: ["pipe", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), params.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      const json = stdout
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line));
      resolve({ code, stdout, stderr, json });
    });
    child.stdin.end(params.input ?? "");
  });
}

/**
 * Starts a `chat` process that stays (`talk PEER`, say) with standard input open, as a script typing into it:
 * its output is watched (WatchedProcess), and the caller ends or kills it.
 */
export function startChat(params: { home: string; relay: string; rpc: string; contract: string; args: string[]; env?: Record<string, string> }): WatchedProcess {
  const child = spawn(process.execPath, [path.join(ROOT, "bin/chat.js"), "--home", params.home, "--relay", params.relay, "--rpc", params.rpc, "--contract", params.contract, ...params.args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: params.home, ...params.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  return new WatchedProcess(child);
}
