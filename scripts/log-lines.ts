/**
 * The relay's JSON log lines (pino) made readable for a person watching `npm start` in a terminal: one
 * short line per event, the time in the local zone, warnings and errors named as such in plain words.
 * Operators' pipelines keep the JSON (npm start passes it through when its output is not a terminal).
 */

/** Fields worth a glance; everything else (pids, hosts, full error objects) stays in the JSON form. */
const SHOWN_FIELDS = ["username", "user", "reason", "url", "signal", "blockNumber", "effectiveAt", "users", "storage", "mailbox", "code", "err"];
const LEVEL_WORDS: Record<number, string> = { 40: "warning", 50: "error", 60: "fatal" };
const MAX_LINE = 160;

/**
 * One readable line for a JSON log line, or the line itself when it is not JSON (a stack trace, a
 * message of Node's own). Control characters are replaced so that a logged name cannot drive the terminal.
 */
export function readableLogLine(line: string, timeZone?: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line);
  } catch {
    return visible(line);
  }
  if (entry === null || typeof entry !== "object" || typeof entry.msg !== "string") return visible(line);
  const time = typeof entry.time === "number" ? new Date(entry.time).toLocaleTimeString("en-GB", { hour12: false, timeZone }) : "";
  const level = typeof entry.level === "number" ? LEVEL_WORDS[entry.level] : undefined;
  const fields = SHOWN_FIELDS.filter((name) => entry[name] !== undefined && entry[name] !== null)
    .map((name) => `${name}=${typeof entry[name] === "object" ? JSON.stringify(entry[name]) : String(entry[name])}`)
    .join(" ");
  const text = [time, level ? `${level}:` : "", entry.msg, fields ? `(${fields})` : ""].filter(Boolean).join(" ");
  return visible(text.length > MAX_LINE ? `${text.slice(0, MAX_LINE - 1)}…` : text);
}

function visible(text: string): string {
  // C0, DEL and C1 controls, and bidi overrides, shown as code points instead of being interpreted.
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
