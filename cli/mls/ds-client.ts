/**
 * The Delivery Service client as the CLI runs it: client-core's DeliveryServiceClient over Node's http or
 * https, with the relay's pinned certificate (a changed one is told apart from an unreachable relay), on
 * kept-alive connections: a live conversation makes a request or two per message, and a TLS handshake
 * for each would cost both sides more than the request.
 */
import http from "node:http";
import https from "node:https";
import type tls from "node:tls";
import { ChatError } from "../../protocol/errors";
import { DeliveryServiceClient, type HttpExchange } from "../../client-core/ds-client";
import type { SocketAppends } from "../../client-core/socket-appends";

export type { DsAppendResult, DsDeviceRef } from "../../client-core/ds-client";

const TIMEOUT_MS = 30_000;
/** Connections kept per relay origin by one client: requests of one device mostly go one at a time. */
const MAX_SOCKETS_PER_ORIGIN = 4;

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
  /** the relay's WebSocket, when the command holds one (chat talk): small messages and cursor moves go over it */
  socket?: SocketAppends;
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
  /** a keep-alive agent for the target's origin; without it, one connection per exchange */
  agent?: http.Agent;
}): Promise<{ status: number; text: string }> {
  return exchangeOnce(params).catch((error: NodeJS.ErrnoException & { reusedSocket?: boolean }) => {
    // A kept-alive connection the relay closed as idle just as it was reused: the request never reached
    // it, so it is sent once more on a new one (every Delivery Service request is safe to repeat).
    if (params.agent && error.reusedSocket && error.code === "ECONNRESET") return exchangeOnce(params);
    throw error;
  });
}

function exchangeOnce(params: Parameters<typeof exchangeText>[0]): Promise<{ status: number; text: string }> {
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
        agent: params.agent ?? false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
        response.on("error", reject);
      },
    );
    request.on("timeout", () => request.destroy(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })));
    request.on("error", (error) => reject(Object.assign(error, { reusedSocket: request.reusedSocket })));
    request.end(payload);
  });
}

/**
 * Keep-alive connections per exchange: one agent per origin and TLS options (the pinned certificate is
 * checked when a connection is made; new pins get a new agent). Idle connections do not hold the process.
 */
function keepAliveAgents() {
  const agents = new Map<string, { tls: tls.ConnectionOptions; agent: http.Agent }>();
  return (origin: string, secure: boolean, tlsOptions: tls.ConnectionOptions): http.Agent => {
    const known = agents.get(origin);
    if (known && known.tls === tlsOptions) return known.agent;
    known?.agent.destroy();
    const settings = { keepAlive: true, maxSockets: MAX_SOCKETS_PER_ORIGIN, scheduling: "lifo" as const };
    const agent = secure ? new https.Agent({ ...settings, ...tlsOptions }) : new http.Agent(settings);
    agents.set(origin, { tls: tlsOptions, agent });
    return agent;
  };
}

/** A Node exchange with the relay at `url`: TLS options per request (the pinned certificate), 30 s timeout. */
export function nodeExchange(options: Pick<DsClientOptions, "tls" | "connectionError">): HttpExchange {
  const agentFor = keepAliveAgents();
  return async (request) => {
    const secure = request.url.protocol === "https:";
    const tlsOptions = secure && options.tls ? await options.tls() : {};
    return exchangeText({
      secure,
      target: request.url,
      method: request.method,
      headers: request.headers,
      payload: request.body === undefined ? undefined : Buffer.from(request.body),
      timeoutMs: TIMEOUT_MS,
      tls: tlsOptions,
      agent: agentFor(request.url.origin, secure, tlsOptions),
    }).catch((error: NodeJS.ErrnoException) => {
      throw options.connectionError?.(error) ?? new ChatError("RELAY_UNREACHABLE", `relay unreachable at ${request.url.origin} (${error.code ?? error.message})`);
    });
  };
}

export class DsClient extends DeliveryServiceClient {
  constructor(options: DsClientOptions) {
    super({ url: options.url, token: options.token, deviceId: options.deviceId, exchange: nodeExchange(options), socket: options.socket });
  }
}
