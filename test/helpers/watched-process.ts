/** A child process whose output is watched: waits for text after a position, in order, as a person reads it. */
import type { ChildProcess } from "node:child_process";

export class WatchedProcess {
  text = "";
  constructor(
    readonly child: ChildProcess,
    streams: NodeJS.ReadableStream[] = [child.stdout!, child.stderr!],
  ) {
    for (const stream of streams) stream.on("data", (chunk) => (this.text += chunk));
  }

  /** The position of `needle` at or after `after` once it shows; throws if the process exits or `ms` pass first. */
  async waitFor(needle: string, after = 0, ms = 45_000): Promise<number> {
    const started = Date.now();
    while (this.text.indexOf(needle, after) < 0) {
      if (Date.now() - started > ms) throw new Error(`never saw ${JSON.stringify(needle)} after ${after}:\n${this.text}`);
      if (this.child.exitCode !== null) throw new Error(`exited (${this.child.exitCode}) before ${JSON.stringify(needle)}:\n${this.text}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return this.text.indexOf(needle, after);
  }

  /** Milliseconds from now until `needle` shows after `after`: the latency a person sees. */
  async timeTo(needle: string, after = 0): Promise<number> {
    const started = Date.now();
    await this.waitFor(needle, after);
    return Date.now() - started;
  }

  count(needle: string): number {
    return this.text.split(needle).length - 1;
  }

  exited(): Promise<number | null> {
    return this.child.exitCode !== null ? Promise.resolve(this.child.exitCode) : new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }
}
