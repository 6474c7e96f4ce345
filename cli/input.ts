/**
 * Reading passwords and lines. With --password-stdin the password is the next line of standard input
 * (a second line for a new password); otherwise it is asked on the terminal with echo off. A password
 * is never echoed, logged or kept longer than the command needs it.
 */
import { ChatError } from "../protocol/errors";

/** Standard input as a queue of lines, shared by password reading and `chat talk`. */
export class StdinLines {
  private buffer = "";
  private lines: string[] = [];
  private ended = false;
  private waiters: ((line: string | undefined) => void)[] = [];
  private started = false;

  constructor(private readonly stream: NodeJS.ReadStream = process.stdin) {}

  private start(): void {
    if (this.started) return;
    this.started = true;
    this.stream.setEncoding("utf8");
    this.stream.on("data", (chunk: string) => {
      this.buffer += chunk;
      let newline: number;
      while ((newline = this.buffer.indexOf("\n")) >= 0) {
        this.push(this.buffer.slice(0, newline).replace(/\r$/, ""));
        this.buffer = this.buffer.slice(newline + 1);
      }
    });
    this.stream.on("end", () => {
      if (this.buffer !== "") this.push(this.buffer.replace(/\r$/, ""));
      this.buffer = "";
      this.ended = true;
      for (const waiter of this.waiters.splice(0)) waiter(undefined);
    });
  }

  private push(line: string): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(line);
    else this.lines.push(line);
  }

  /** The next line, or undefined at the end of input. */
  next(): Promise<string | undefined> {
    this.start();
    if (this.lines.length > 0) return Promise.resolve(this.lines.shift());
    if (this.ended) return Promise.resolve(undefined);
    this.stream.resume();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Stops reading so that the process can exit. */
  close(): void {
    if (this.started) this.stream.pause();
  }
}

/** Asks on the terminal with echo off. */
export function promptHidden(question: string, stdin: NodeJS.ReadStream = process.stdin, stderr: NodeJS.WriteStream = process.stderr): Promise<string> {
  if (!stdin.isTTY) {
    return Promise.reject(new ChatError("USAGE", "no terminal to ask for the password: pass it with --password-stdin"));
  }
  return new Promise((resolve, reject) => {
    stderr.write(question);
    let value = "";
    stdin.setRawMode(true);
    stdin.setEncoding("utf8");
    stdin.resume();
    const done = (error?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off("data", onData);
      stderr.write("\n");
      if (error) reject(error);
      else resolve(value);
    };
    const onData = (chunk: string) => {
      for (const char of chunk) {
        if (char === "\r" || char === "\n") return done();
        if (char === "\u0003") return done(new ChatError("CANCELLED", "cancelled"));
        if (char === "\u007f" || char === "\b") value = value.slice(0, -1);
        else value += char;
      }
    };
    stdin.on("data", onData);
  });
}

export interface PasswordSource {
  /** The account password. */
  password(prompt?: string): Promise<string>;
  /** A new password (asked twice on a terminal). */
  newPassword(): Promise<string>;
}

export function passwordSource(params: { fromStdin: boolean; lines: StdinLines }): PasswordSource {
  const fromStdin = async (what: string) => {
    const line = await params.lines.next();
    if (line === undefined || line === "") throw new ChatError("USAGE", `--password-stdin: expected ${what} on standard input`);
    return line;
  };
  return {
    async password(prompt = "Password: ") {
      if (params.fromStdin) return fromStdin("the password");
      const value = await promptHidden(prompt);
      if (value === "") throw new ChatError("USAGE", "empty password");
      return value;
    },
    async newPassword() {
      if (params.fromStdin) return fromStdin("the new password as the second line");
      const first = await promptHidden("New password: ");
      if (first.length < 8) throw new ChatError("USAGE", "the new password must have at least 8 characters");
      const second = await promptHidden("Repeat the new password: ");
      if (first !== second) throw new ChatError("USAGE", "the two passwords differ");
      return first;
    },
  };
}

/**
 * A yes/no question: on a terminal asked on stderr; otherwise the answer is the next line of standard
 * input. Only "y" or "yes" (any case) is yes; anything else, or no answer, is no.
 */
export async function askYesNo(question: string, params: { lines: StdinLines; passwordStdin?: boolean }): Promise<boolean> {
  let answer: string | undefined;
  if (process.stdin.isTTY && !params.passwordStdin) {
    const readline = await import("node:readline/promises");
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
    try {
      answer = await rl.question(question);
    } finally {
      rl.close();
    }
  } else {
    process.stderr.write(question);
    answer = await params.lines.next();
    process.stderr.write("\n");
  }
  return /^\s*y(es)?\s*$/i.test(answer ?? "");
}
