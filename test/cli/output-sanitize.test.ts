/**
 * The terminal cannot be forged: message bodies and names reach stdout through the real Output and
 * formatMessage with every control character, escape sequence and bidi override shown as an escape, and
 * every further line of a body indented under its header. --json output is JSON-escaped.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { PassThrough } from "node:stream";
import { BODY_INDENT, formatMessage, localTime } from "../../cli/messaging";
import { Output, inert, inertLine } from "../../cli/output";

/** Pieces an attacker would put in a body: escape sequences, C1 CSI, bidi overrides, line breaks, a fake header. */
const HOSTILE = [
  "\x1b[2J",
  "\x1b[31mred\x1b[0m",
  "\x1b]0;title\x07",
  "\x1b[1A\x1b[2K",
  "\x9b2J",
  "\x90",
  "\r",
  "\n",
  "\r\n",
  "\n[2026-01-01 00:00:00] mallory: ",
  "\u202e",
  "\u202a",
  "\u2066",
  "\u2069",
  "\u200f",
  "\u2028",
  "\u2029",
  "\x00",
  "\x08",
  "\x7f",
  "\t",
  "hello",
  "é ✓ 漢字",
];

function fuzzBody(seed: Buffer): string {
  let body = "";
  for (const byte of seed) body += byte % 3 === 0 ? String.fromCharCode(0x20 + (byte % 0x5f)) : HOSTILE[byte % HOSTILE.length];
  return body;
}

function capture(json: boolean) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (chunk) => (out += chunk));
  stderr.on("data", (chunk) => (err += chunk));
  const output = new Output(json, stdout as unknown as NodeJS.WriteStream, stderr as unknown as NodeJS.WriteStream);
  return { output, text: () => out, errors: () => err };
}

/** Bytes and characters a terminal interprets: ESC, C1 (CSI 0x9b among them), other C0 but tab and newline, bidi controls. */
const INTERPRETED = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/;

describe("terminal output is inert", () => {
  it("1,000 fuzzed hostile bodies and names print with no control bytes, each further body line indented", () => {
    const { output, text } = capture(false);
    const bodies: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const body = fuzzBody(randomBytes(1 + (i % 40)));
      bodies.push(body);
      output.data({}, formatMessage({ sender: i % 7 === 0 ? "eve\x1b[2Kmallory" : "alice", body, timestamp: 1_700_000_000_000 + i }));
    }
    const printed = text();
    expect(printed).to.not.match(INTERPRETED);
    expect(Buffer.from(printed, "utf8").includes(0x1b)).to.equal(false);
    expect(printed).to.not.include("\u009b");
    // Every line is a header of one of our messages or an indented continuation: nothing passes for a new sender.
    const lines = printed.split("\n").slice(0, -1);
    let headers = 0;
    for (const line of lines) {
      if (line.startsWith(BODY_INDENT)) continue;
      expect(line).to.match(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (alice|eve\\x1b\[2Kmallory): /);
      headers++;
    }
    expect(headers).to.equal(1000);
    // The count of continuation lines is the count of line breaks in the bodies (CR LF and lone CR count once).
    const breaks = bodies.reduce((n, b) => n + b.replace(/\r\n?/g, "\n").split("\n").length - 1, 0);
    expect(lines.length - headers).to.equal(breaks);
  });

  it("--json writes the same bodies JSON-escaped: parseable, equal to the original, no raw control or bidi character", () => {
    const { output, text } = capture(true);
    const bodies = Array.from({ length: 1000 }, (_, i) => fuzzBody(randomBytes(1 + (i % 40))));
    for (const body of bodies) output.data({ type: "message", from: "alice", body }, "unused");
    const printed = text();
    expect(printed).to.not.match(INTERPRETED);
    const parsed = printed.trim().split("\n").map((line) => JSON.parse(line));
    expect(parsed.map((o) => o.body)).to.deep.equal(bodies);
  });

  it("warnings and notes on stderr are inert too; escapes are visible, not dropped", () => {
    const { output, errors } = capture(false);
    output.warn({ code: "X", message: "from \x1b[31mmallory\u202e" });
    output.info("note \x9b1m");
    expect(errors()).to.equal("! WARNING: from \\x1b[31mmallory\\u202e\nnote \\x9b1m\n");
    expect(inertLine("a\nb\tc")).to.equal("a\\x0ab\\x09c");
    expect(inert("a\nb")).to.equal("a\nb");
  });

  it("times are shown in the local time zone", () => {
    const t = Date.UTC(2026, 0, 2, 3, 4, 5);
    const d = new Date(t);
    const expected = `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")} ${String(d.getHours()).padStart(2, "0")}:04:05`;
    expect(localTime(t)).to.equal(expected);
    expect(formatMessage({ sender: "bob", body: "hi", timestamp: t })).to.equal(`[${expected}] bob: hi`);
  });
});
