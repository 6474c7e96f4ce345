/** Runs the real `chat` command (bin/chat.js) as a separate process, as a person or a script would. */
import { spawn } from "node:child_process";
import path from "node:path";

const ROOT = path.resolve(__dirname, "../..");

export interface ChatResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON lines (with --json) */
  json: any[];
}

export function runChat(params: {
  home: string;
  relay: string;
  rpc: string;
  args: string[];
  input?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}): Promise<ChatResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [path.join(ROOT, "bin/chat.js"), "--home", params.home, "--relay", params.relay, "--rpc", params.rpc, ...params.args],
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
