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

/**
 * Characters a terminal would interpret rather than show: C0 controls (ESC starts escape sequences,
 * CR rewrites the line), DEL, C1 controls (0x9B is a one-byte CSI), and the bidirectional overrides and
 * isolates that reorder what follows them. Line and paragraph separators count too: they break lines.
 */
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;
const UNSAFE_IN_LINE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;

const visible = (char: string) => {
  const code = char.codePointAt(0)!;
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
};

/** `text` with every control character, escape sequence introducer and bidi override shown as \xNN or \uNNNN; newlines and tabs kept. */
export function inert(text: string): string {
  return text.replace(UNSAFE, visible);
}

/** A name or one-line value: like inert(), and newlines and tabs are shown as escapes too. */
export function inertLine(text: string): string {
  return text.replace(UNSAFE_IN_LINE, visible);
}

/**
 * JSON with the characters JSON.stringify leaves raw but a terminal interprets (DEL, C1, bidi controls,
 * line separators) written as \u escapes: still the same JSON value, never a raw control byte.
 */
export function inertJson(value: unknown): string {
  return JSON.stringify(value).replace(UNSAFE, (char) => `\\u${char.codePointAt(0)!.toString(16).padStart(4, "0")}`);
}

export class Output {
  private statusShown = false;
  /**
   * Rewrites the advice in notes and warnings for people (the menu names its own choices instead of shell
   * commands). Data and --json objects are never rewritten.
   */
  adviceFor: (text: string) => string = (text) => text;
  constructor(
    readonly json: boolean,
    private readonly stdout: NodeJS.WriteStream = process.stdout,
    private readonly stderr: NodeJS.WriteStream = process.stderr,
  ) {}

  /** One record of data: `text` for people, `object` for --json. */
  data(object: Record<string, unknown>, text: string): void {
    this.clearStatus();
    this.stdout.write(this.json ? `${inertJson(object)}\n` : `${inert(text)}\n`);
  }

  /** A note for the person (stderr); silent in --json mode unless `always`. */
  info(text: string, options: { always?: boolean } = {}): void {
    if (this.json && !options.always) return;
    this.clearStatus();
    this.stderr.write(`${inert(this.adviceFor(text))}\n`);
  }

  /** A warning that must be seen: stderr always, and a warning object on stdout in --json mode. */
  warn(warning: Warning, loud = false): void {
    this.clearStatus();
    const banner = loud ? "!!!" : "!";
    this.stderr.write(`${banner} WARNING: ${inert(this.adviceFor(warning.message))}\n`);
    if (this.json) this.stdout.write(`${inertJson({ type: "warning", ...warning })}\n`);
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
