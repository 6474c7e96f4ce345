/**
 * The Delivery Service client as the CLI runs it: client-core's DeliveryServiceClient over Node's http or
 * https, with the relay's pinned certificate (a changed one is told apart from an unreachable relay).
 */
import http from "node:http";
import https from "node:https";
import type tls from "node:tls";
import { ChatError } from "../../protocol/errors";
import { DeliveryServiceClient, type HttpExchange } from "../../client-core/ds-client";

export type { DsAppendResult, DsDeviceRef } from "../../client-core/ds-client";

const TIMEOUT_MS = 30_000;

export interface DsClientOptions {
  /** the relay's origin, e.g. https://relay.example:8443 */
  url: string;
  /** the session token from login (a function: the session's current one, when a login renews it) */
  token: string | (() => string);
  deviceId: string;
  /** TLS options for https (the CLI passes its pinned certificate: RelayHttp.tls()) */
  tls?: () => Promise<tls.ConnectionOptions>;
  /** names a transport failure (the CLI's RelayHttp.connectionError tells a changed certificate apart) */
  connectionError?: (error: unknown) => ChatError;
}

/**
 * One JSON exchange with the relay over HTTP or pinned HTTPS: sends `payload` (if any) and collects the
 * answer as text. Rejects with the transport's own error (a timeout as ETIMEDOUT) for the caller to name.
 */
export function exchangeText(params: {
  secure: boolean;
  target: URL;
  method: "GET" | "POST";
  /** besides accept and, with a payload, content-type and content-length */
  headers: Record<string, string>;
  payload?: Buffer;
  timeoutMs: number;
  tls: tls.ConnectionOptions;
}): Promise<{ status: number; text: string }> {
  const { payload } = params;
  return new Promise((resolve, reject) => {
    const request = (params.secure ? https : http).request(
      params.target,
      {
        method: params.method,
        headers: {
          accept: "application/json",
          ...params.headers,
          ...(payload ? { "content-type": "application/json", "content-length": String(payload.length) } : {}),
        },
        timeout: params.timeoutMs,
        ...params.tls,
        agent: false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
        response.on("error", reject);
      },
    );
    request.on("timeout", () => request.destroy(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })));
    request.on("error", reject);
    request.end(payload);
  });
}

/** A Node exchange with the relay at `url`: TLS options per request (the pinned certificate), 30 s timeout. */
export function nodeExchange(options: Pick<DsClientOptions, "tls" | "connectionError">): HttpExchange {
  return async (request) => {
    const secure = request.url.protocol === "https:";
    return exchangeText({
      secure,
      target: request.url,
      method: request.method,
      headers: request.headers,
      payload: request.body === undefined ? undefined : Buffer.from(request.body),
      timeoutMs: TIMEOUT_MS,
      tls: secure && options.tls ? await options.tls() : {},
    }).catch((error: NodeJS.ErrnoException) => {
      throw options.connectionError?.(error) ?? new ChatError("RELAY_UNREACHABLE", `relay unreachable at ${request.url.origin} (${error.code ?? error.message})`);
    });
  };
}

export class DsClient extends DeliveryServiceClient {
  constructor(options: DsClientOptions) {
    super({ url: options.url, token: options.token, deviceId: options.deviceId, exchange: nodeExchange(options) });
  }
}
