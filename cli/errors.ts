/**
 * CLI errors: the protocol's ChatError codes plus a few that only the client meets. Every error becomes
 * one line on stderr ("chat: CODE: message") and a non-zero exit; messages never carry secrets.
 */
import { ChatError, isChatError } from "../protocol/errors";

export type CliErrorCode = "CHAIN_MISMATCH" | "NOT_LOGGED_IN" | "NO_LOCAL_KEY" | "USAGE" | "CANCELLED";

export class CliError extends Error {
  readonly code: CliErrorCode;
  constructor(code: CliErrorCode, message: string) {
    super(message);
    this.name = "CliError";
    this.code = code;
  }
}

/** The code and one-line message of anything thrown. Unknown errors keep only their message's first line. */
export function describeError(error: unknown): { code: string; message: string } {
  if (isChatError(error) || error instanceof CliError) return { code: error.code, message: oneLine(error.message) };
  const message = error instanceof Error ? error.message : String(error);
  return { code: "INTERNAL", message: oneLine(message) };
}

function oneLine(text: string): string {
  const line = text.split("\n")[0].trim();
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

export { ChatError };
