/**
 * The relay's HTTP API from the page that relay served: same-origin fetch, answers parsed with the wire
 * schemas (protocol/wire*.ts), relay errors as ChatError with the relay's own code, and the session token
 * as `Authorization: Bearer` on calls that act for the session's user.
 */
import type { z } from "zod";
import { ChatError } from "../../protocol/errors";
import { ErrorBody } from "../../protocol/wire";

/** A registration or key change waits for its block. */
const TIMEOUT_MS = 60_000;

export class RelayApi {
  /** `origin`: the relay's origin, by default the page's own. */
  constructor(readonly origin: string = location.origin) {}

  async request<T extends z.ZodTypeAny>(method: "GET" | "POST", path: string, schema: T, options: { body?: unknown; token?: string } = {}): Promise<z.infer<T>> {
    if (!path.startsWith("/")) throw new ChatError("BAD_REQUEST", `relay paths are absolute: ${path}`);
    const url = new URL(path, this.origin);
    if (url.origin !== this.origin) throw new ChatError("BAD_REQUEST", "relay calls stay on the relay's origin");
    const headers: Record<string, string> = { accept: "application/json" };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (options.body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        credentials: "omit",
        cache: "no-store",
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (error) {
      const reason = error instanceof DOMException && error.name === "TimeoutError" ? "timed out" : "network error";
      throw new ChatError("RELAY_UNREACHABLE", `relay unreachable at ${this.origin} (${reason})`);
    }
    const text = await response.text().catch(() => "");
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      throw new ChatError("RELAY_UNREACHABLE", `relay at ${this.origin} answered ${method} ${url.pathname} with status ${response.status} and no JSON`);
    }
    if (response.status >= 400) {
      const parsed = ErrorBody.safeParse(json);
      if (!parsed.success) throw new ChatError("RELAY_UNREACHABLE", `relay at ${this.origin} answered ${method} ${url.pathname} with status ${response.status}`);
      const { code, message, retryAfterSeconds } = parsed.data.error;
      throw new ChatError(code, message, { status: response.status, ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}) });
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ChatError("RELAY_UNREACHABLE", `relay at ${this.origin} sent a malformed answer to ${url.pathname}: ${issue?.path.join(".")}: ${issue?.message}`);
    }
    return parsed.data;
  }

  get<T extends z.ZodTypeAny>(path: string, schema: T, options: { token?: string } = {}): Promise<z.infer<T>> {
    return this.request("GET", path, schema, options);
  }

  post<T extends z.ZodTypeAny>(path: string, body: unknown, schema: T, options: { token?: string } = {}): Promise<z.infer<T>> {
    return this.request("POST", path, schema, { body, token: options.token });
  }
}
