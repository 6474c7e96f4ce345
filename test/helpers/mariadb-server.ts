/**
 * A MariaDB server of the test's own (`/usr/sbin/mariadbd` on a temporary data folder, a free loopback
 * port, its socket in that folder), for tests that must stop and restart the database: the shared server
 * at 127.0.0.1:3306 is never touched. No `mariadb-install-db`: with --skip-grant-tables mariadbd starts
 * on an empty folder (root without password) in about 2 s instead of 7 s.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import mysql from "mysql2/promise";
import { freePort } from "./ports";

export const MARIADBD = process.env.TEST_MARIADBD ?? "/usr/sbin/mariadbd";

export interface MariaDbServer {
  port: number;
  /** mysql://root@127.0.0.1:PORT (no database) */
  adminUrl: string;
  /** mysql://root@127.0.0.1:PORT/chat */
  url: string;
  /** Starts the server (again) on the same folder and port; resolves once it answers. */
  start(): Promise<void>;
  /** SIGTERM (a clean shutdown) and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL (a crash) and wait for exit. */
  kill(): Promise<void>;
  /** Stops it and removes the folder. */
  destroy(): Promise<void>;
  output(): string;
}

export async function startMariaDbServer(): Promise<MariaDbServer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "chat-mariadb-"));
  const datadir = path.join(dir, "data");
  mkdirSync(datadir);
  const port = await freePort();
  const adminUrl = `mysql://root@127.0.0.1:${port}`;
  let child: ChildProcess | null = null;
  let output = "";

  const args = [
    "--no-defaults",
    `--datadir=${datadir}`,
    `--port=${port}`,
    `--socket=${path.join(dir, "mariadb.sock")}`,
    `--pid-file=${path.join(dir, "mariadb.pid")}`,
    "--bind-address=127.0.0.1",
    "--skip-grant-tables",
    "--skip-name-resolve",
    "--skip-log-bin",
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    ...(process.getuid?.() === 0 ? ["--user=root"] : []),
  ];

  const exited = () => !child || child.exitCode !== null || child.signalCode !== null;
  const waitExit = (signal: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      if (exited()) return resolve();
      child!.once("exit", () => resolve());
      child!.kill(signal);
    });

  const start = async () => {
    if (!exited()) return;
    const proc = spawn(MARIADBD, args, { stdio: ["ignore", "pipe", "pipe"] });
    child = proc;
    proc.stdout?.on("data", (c) => (output += c));
    proc.stderr?.on("data", (c) => (output += c));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (exited()) throw new Error(`mariadbd exited (${proc.exitCode ?? proc.signalCode}):\n${output.slice(-2000)}`);
      try {
        const conn = await mysql.createConnection({ uri: adminUrl, connectTimeout: 1_000 });
        await conn.query("CREATE DATABASE IF NOT EXISTS chat CHARACTER SET utf8mb4 COLLATE utf8mb4_bin");
        await conn.end();
        return;
      } catch {
        if (Date.now() > deadline) {
          await waitExit("SIGKILL");
          throw new Error(`mariadbd did not answer on ${port}:\n${output.slice(-2000)}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };

  await start();
  return {
    port,
    adminUrl,
    url: `${adminUrl}/chat`,
    start,
    stop: () => waitExit("SIGTERM"),
    kill: () => waitExit("SIGKILL"),
    destroy: async () => {
      await waitExit("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
    output: () => output,
  };
}
