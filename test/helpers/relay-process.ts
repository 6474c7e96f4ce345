/**
 * Starts the real relay (`tsx relay/main.ts`) as a child process on a free loopback port, the way an
 * operator runs it, and waits until GET /healthz answers 200 (chain reachable, cache synced).
 * TLS is on by default with the self-signed certificate the relay generates into `dataDir`;
 * `certificate` holds that PEM so callers can pin it (see `request`).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import https from "node:https";
import http from "node:http";
import path from "node:path";
import { freePort } from "./ports";

export interface RelayProcess {
  url: string;
  port: number;
  process: ChildProcess;
  /** PEM of the relay's certificate (null with INSECURE_HTTP=1). */
  certificate: string | null;
  /** What the process wrote so far (pino JSON lines on stdout, anything on stderr). */
  output(): string;
  /** JSON request to the relay, trusting exactly its certificate. */
  request(method: string, pathname: string, body?: unknown): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: any }>;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit (a crash). */
  kill(): Promise<void>;
}

export interface RelayProcessOptions {
  rpcUrl: string;
  contractAddress: string;
  deployBlock: number;
  relayerKey: string;
  mysqlUrl?: string;
  redisUrl?: string;
  dataDir: string;
  /** Extra or overriding settings (e.g. INSECURE_HTTP: "1", RATE_LIMIT_LOGIN_PER_USER: "2"). */
  env?: Record<string, string>;
  /** Fixed port instead of a free one (e.g. to restart on the same address). */
  port?: number;
  /** Defaults to 30 s. */
  startTimeoutMs?: number;
}

const ROOT = path.resolve(__dirname, "../..");

/**
 * Spawns `node --import tsx relay/main.ts [args]` with exactly `env` on top of PATH/HOME (no inherited
 * .env surprises). One process, not the `tsx` launcher: the launcher runs the relay in a child of its
 * own, so a SIGKILL to it left the relay running (orphaned) instead of crashing it.
 */
export function spawnRelay(args: string[], env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", "relay/main.ts", ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/**
 * Every relay setting, set explicitly (an empty value means unset): dotenv never overrides a variable
 * that exists, so a developer's .env cannot leak into tests. Rate limits are generous unless overridden,
 * so suites that register many users do not trip them by accident.
 */
export function relayEnv(options: RelayProcessOptions & { port: number }): Record<string, string> {
  return {
    RPC_URL: options.rpcUrl,
    CONTRACT_ADDRESS: options.contractAddress,
    DEPLOY_BLOCK: String(options.deployBlock),
    ACCOUNT: "",
    PRIVATE_KEY: options.relayerKey,
    CREDENTIAL_PEPPER: randomBytes(32).toString("hex"),
    SESSION_SECRET: randomBytes(32).toString("hex"),
    MYSQL_URL: options.mysqlUrl ?? "",
    REDIS_URL: options.redisUrl ?? "",
    HOST: "127.0.0.1",
    PORT: String(options.port),
    TLS_CERT: "",
    TLS_KEY: "",
    INSECURE_HTTP: "",
    DATA_DIR: options.dataDir,
    MAX_FRAME_BYTES: "65536",
    MAILBOX_TTL_DAYS: "30",
    LOG_LEVEL: "info",
    SYNC_POLL_MS: "100",
    RATE_LIMIT_LOGIN_PER_USER: "1000",
    RATE_LIMIT_LOGIN_PER_ADDRESS: "100000",
    RATE_LIMIT_REGISTER_PER_USER: "1000",
    RATE_LIMIT_REGISTER_PER_ADDRESS: "100000",
    // Every test client connects from 127.0.0.1: per-address caps as a single busy host would need.
    HTTP_MAX_CONNECTIONS_PER_ADDRESS: "4096",
    WS_MAX_CONNECTIONS_PER_ADDRESS: "4096",
    ...options.env,
  };
}

export async function startRelayProcess(options: RelayProcessOptions): Promise<RelayProcess> {
  const port = options.port ?? (await freePort());
  const env = relayEnv({ ...options, port });
  const insecure = /^(1|true|yes)$/i.test(env.INSECURE_HTTP ?? "");
  const url = `${insecure ? "http" : "https"}://127.0.0.1:${port}`;
  const child = spawnRelay([], env);
  let output = "";
  child.stdout?.on("data", (chunk) => (output += chunk));
  child.stderr?.on("data", (chunk) => (output += chunk));

  let certificate: string | null = null;
  const request: RelayProcess["request"] = (method, pathname, body) =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const options: https.RequestOptions = {
        method,
        headers: payload ? { "content-type": "application/json", "content-length": payload.length } : {},
        ...(insecure ? {} : { ca: certificate ?? undefined, checkServerIdentity: () => undefined }),
        timeout: 30_000,
      };
      const req = (insecure ? http : https).request(`${url}${pathname}`, options, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            /* not JSON: keep the text */
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
        });
      });
      req.on("error", reject);
      req.on("timeout", () => req.destroy(new Error("request timed out")));
      req.end(payload);
    });

  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const waitExit = (signal: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      if (exited()) return resolve();
      child.once("exit", () => resolve());
      child.kill(signal);
    });

  const deadline = Date.now() + (options.startTimeoutMs ?? 30_000);
  for (;;) {
    if (exited()) throw new Error(`relay exited (${child.exitCode ?? child.signalCode}) before it was healthy:\n${output}`);
    if (Date.now() > deadline) {
      await waitExit("SIGKILL");
      throw new Error(`relay did not become healthy on ${url}:\n${output}`);
    }
    try {
      if (!insecure && certificate === null) {
        const certFile = env.TLS_CERT || path.join(path.resolve(ROOT, options.dataDir), "tls-cert.pem");
        certificate = await readFile(path.resolve(ROOT, certFile), "utf8");
      }
      const health = await request("GET", "/healthz");
      if (health.status === 200) break;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    url,
    port,
    process: child,
    certificate,
    output: () => output,
    request,
    stop: () => waitExit("SIGTERM"),
    kill: () => waitExit("SIGKILL"),
  };
}
