/**
 * How the client reports an error: every error becomes one line on stderr ("chat: CODE: message") and a
 * non-zero exit. Errors are protocol/errors.ts's ChatError with a stable code; messages never carry secrets.
 */
import { isChatError, type ErrorCode } from "../protocol/errors";

/** The code and one-line message of anything thrown. Unknown errors keep only their message's first line. */
export function describeError(error: unknown): { code: ErrorCode; message: string } {
  if (isChatError(error)) return { code: error.code, message: oneLine(error.message) };
  const message = error instanceof Error ? error.message : String(error);
  return { code: "INTERNAL", message: oneLine(message) };
}

function oneLine(text: string): string {
  const line = text.split("\n")[0].trim();
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}
