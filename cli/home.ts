/**
 * The client's home folder: everything the client keeps, readable only by the user (folders 0700,
 * files 0600, written atomically through a temporary file and rename).
 *
 *   relays.json                     pinned TLS certificate, chain id and contract per relay
 *   session.json                    the logged-in user: relay token and the unlocked identity keys
 *   users/<name>/identity.json      public keys and indices of the user's keys on this device
 *   users/<name>/keys/<index>.json  each identity key, an ethers JSON keystore v3 (scrypt)
 *   users/<name>/contacts.json      pinned keys of peers, and which were verified
 *   users/<name>/outbox.json        messages not yet accepted by the relay
 *   users/<name>/history/<peer>.jsonl  the conversation with each peer
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, appendFileSync, openSync, closeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { assertUsername } from "../protocol/username";

export function defaultHome(env: NodeJS.ProcessEnv): string {
  const config = env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : path.join(os.homedir(), ".config");
  return path.join(config, "eth-chat");
}

export class Home {
  readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  /** Creates a folder (and parents inside the home) with mode 0700, tightening an existing one. */
  dir(...parts: string[]): string {
    const full = path.join(this.root, ...parts);
    if (!existsSync(full)) mkdirSync(full, { recursive: true, mode: 0o700 });
    // mkdir's mode is masked by umask; set it explicitly on the home and the path below it
    let current = this.root;
    chmodSync(current, 0o700);
    for (const part of parts) {
      current = path.join(current, part);
      chmodSync(current, 0o700);
    }
    return full;
  }

  userDir(username: string, ...parts: string[]): string {
    return this.dir("users", assertUsername(username), ...parts);
  }

  path(...parts: string[]): string {
    return path.join(this.root, ...parts);
  }

  readJson<T>(file: string): T | undefined {
    if (!existsSync(file)) return undefined;
    return JSON.parse(readFileSync(file, "utf8")) as T;
  }

  /** Atomic write with mode 0600: a crash leaves the old or the new file, never half of one. */
  writeJson(file: string, value: unknown): void {
    this.dir(...path.relative(this.root, path.dirname(file)).split(path.sep).filter(Boolean));
    const temp = `${file}.${randomBytes(4).toString("hex")}.tmp`;
    writeFileSync(temp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
    chmodSync(temp, 0o600);
    renameSync(temp, file);
  }

  appendLine(file: string, value: unknown): void {
    this.dir(...path.relative(this.root, path.dirname(file)).split(path.sep).filter(Boolean));
    if (!existsSync(file)) closeSync(openSync(file, "a", 0o600));
    chmodSync(file, 0o600);
    appendFileSync(file, `${JSON.stringify(value)}\n`, { mode: 0o600 });
  }

  readLines<T>(file: string): T[] {
    if (!existsSync(file)) return [];
    return readFileSync(file, "utf8")
      .split("\n")
      .filter((line) => line.trim() !== "")
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as T];
        } catch {
          return []; // a torn last line after a crash
        }
      });
  }

  remove(file: string): void {
    rmSync(file, { force: true });
  }

  exists(file: string): boolean {
    return existsSync(file);
  }

  mode(file: string): number {
    return statSync(file).mode & 0o777;
  }
}
