/**
 * Output: data on stdout (text, or one JSON object per line with --json), messages and warnings on
 * stderr. In --json mode warnings are also written to stdout as {"type":"warning",...} objects so that
 * scripts see them in order with the data.
 */
export interface Warning {
  code: string;
  message: string;
  [field: string]: unknown;
}

export class Output {
  private statusShown = false;
  constructor(
    readonly json: boolean,
    private readonly stdout: NodeJS.WriteStream = process.stdout,
    private readonly stderr: NodeJS.WriteStream = process.stderr,
  ) {}

  /** One record of data: `text` for people, `object` for --json. */
  data(object: Record<string, unknown>, text: string): void {
    this.clearStatus();
    this.stdout.write(this.json ? `${JSON.stringify(object)}\n` : `${text}\n`);
  }

  /** A note for the person (stderr); silent in --json mode unless `always`. */
  info(text: string, options: { always?: boolean } = {}): void {
    if (this.json && !options.always) return;
    this.clearStatus();
    this.stderr.write(`${text}\n`);
  }

  /** A warning that must be seen: stderr always, and a warning object on stdout in --json mode. */
  warn(warning: Warning, loud = false): void {
    this.clearStatus();
    const banner = loud ? "!!!" : "!";
    this.stderr.write(`${banner} WARNING: ${warning.message}\n`);
    if (this.json) this.stdout.write(`${JSON.stringify({ type: "warning", ...warning })}\n`);
  }

  /** A progress line on stderr (rewritten in place on a terminal) while something waits. */
  status(text: string): void {
    if (this.stderr.isTTY) {
      this.stderr.write(`\r\x1b[2K${text}`);
      this.statusShown = true;
    } else {
      this.stderr.write(`${text}\n`);
    }
  }

  clearStatus(): void {
    if (this.statusShown) {
      this.stderr.write("\r\x1b[2K");
      this.statusShown = false;
    }
  }

  /**
   * Shows `text` with a spinner on a terminal until `work` settles. Without a terminal only waits for a
   * transaction get a line (local work is quick enough to need none, and scripts read stderr).
   */
  async progress<T>(text: string, work: Promise<T>, options: { transaction?: boolean } = {}): Promise<T> {
    if (!this.stderr.isTTY) {
      if (options.transaction && !this.json) this.status(`${text}...`);
      return work;
    }
    const frames = ["|", "/", "-", "\\"];
    let i = 0;
    const started = Date.now();
    const timer = setInterval(() => this.status(`${frames[i++ % 4]} ${text} (${Math.round((Date.now() - started) / 1000)} s)`), 120);
    try {
      return await work;
    } finally {
      clearInterval(timer);
      this.clearStatus();
    }
  }
}
