/**
 * How the client reports an error: every error becomes one line on stderr ("chat: CODE: message") and a
 * non-zero exit. Errors are protocol/errors.ts's ChatError with a stable code; messages never carry secrets.
 */
import { ChatError, isChatError, type ErrorCode } from "../protocol/errors";
import { assertUsername, isValidUsername } from "../protocol/username";
import { inertLine } from "./output";

/** The relay address `npm start` serves, and so the default of --relay. */
const DEFAULT_RELAY_ADDRESSES = ["127.0.0.1:8443", "localhost:8443"];

/** The code and one-line message of anything thrown. Unknown errors keep only their message's first line. */
export function describeError(error: unknown): { code: ErrorCode; message: string } {
  if (isChatError(error)) return { code: error.code, message: withHint(error.code, oneLine(error.message)) };
  const message = error instanceof Error ? error.message : String(error);
  return { code: "INTERNAL", message: oneLine(message) };
}

/** A refused connection to the default relay address almost always means the local stack is not started. */
function withHint(code: ErrorCode, message: string): string {
  if (code !== "RELAY_UNREACHABLE" || !DEFAULT_RELAY_ADDRESSES.some((address) => message.includes(address))) return message;
  if (/ECONNREFUSED/.test(message)) return `${message}: nothing listens there; is \`npm start\` running?`;
  return message;
}

/** A username typed by a person: INVALID_USERNAME names the lower-case spelling when that one is valid. */
export function parseUsername(raw: string): string {
  try {
    return assertUsername(raw);
  } catch (error) {
    const lower = typeof raw === "string" ? raw.trim().toLowerCase() : "";
    if (isChatError(error) && error.code === "INVALID_USERNAME" && isValidUsername(lower)) {
      throw new ChatError("INVALID_USERNAME", `${error.message}; did you mean ${lower}?`);
    }
    throw error;
  }
}

function oneLine(text: string): string {
  const line = inertLine(text.split("\n")[0].trim());
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}
