/**
 * The WebSocket upgrade on /v1/ws: admission (shutting down, too many connections) and authentication
 * (the session token as a Bearer header, or offered as the subprotocols `eth-chat, bearer.<token>` by a
 * browser, checked for revocation and for the user's current key and password) happen here, so a refused client gets an HTTP status and a JSON error body and no socket is
 * ever accepted for it.
 */
import type { IncomingMessage } from "node:http";
import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import type { WebSocket, WebSocketServer } from "ws";
import { isChatError, type ErrorCode } from "../../protocol/errors";
import { bearerToken, subprotocolToken, type SessionClaims } from "../sessions";
import { WS_EARLY_PARAM, WS_PATH } from "../../protocol/wire";

function refuse(socket: Duplex, status: number, code: ErrorCode, message: string, headers: string[] = []): void {
  const body = JSON.stringify({ error: { code, message } });
  const head = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}`,
    "Content-Type: application/json",
    `Content-Length: ${Buffer.byteLength(body)}`,
    "Connection: close",
    ...headers,
  ];
  socket.once("finish", () => socket.destroy());
  socket.end(`${head.join("\r\n")}\r\n\r\n${body}`);
}

/** The server's `upgrade` listener: refuses or accepts, then hands the socket and its session on. */
export function createUpgradeHandler(params: {
  wss: WebSocketServer;
  /** the claims of a token that still stands; throws a ChatError (401) otherwise */
  authenticate: (token: string | undefined) => Promise<SessionClaims>;
  isClosing: () => boolean;
  connectionCount: () => number;
  maxConnections: number;
  /** open connections of one user on this instance */
  userConnectionCount: (username: string) => number;
  maxConnectionsPerUser: number;
  /** open connections and upgrades being authenticated, per client address */
  maxConnectionsPerAddress: number;
  /** told which cap refused an upgrade */
  onRefused?: (cap: "global" | "user" | "address") => void;
  /** `release` must be called when the connection closes: it frees the address's slot */
  onConnection: (ws: WebSocket, claims: SessionClaims, release: () => void, asked: { early: boolean }) => void;
}): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  // Counted from the upgrade request on (authentication pending included), so that a burst of upgrades
  // from one address cannot pass the cap while their tokens are being checked.
  const perAddress = new Map<string, number>();
  const take = (address: string) => perAddress.set(address, (perAddress.get(address) ?? 0) + 1);
  const release = (address: string) => {
    const n = (perAddress.get(address) ?? 1) - 1;
    if (n <= 0) perAddress.delete(address);
    else perAddress.set(address, n);
  };
  return (req, socket, head) => {
    socket.on("error", () => socket.destroy());
    let pathname = "";
    let early = false;
    try {
      const url = new URL(req.url ?? "/", "http://relay");
      pathname = url.pathname;
      early = url.searchParams.get(WS_EARLY_PARAM) === "1";
    } catch {}
    if (pathname !== WS_PATH) return refuse(socket, 404, "NOT_FOUND", `no WebSocket endpoint here; use ${WS_PATH}`);
    if (params.isClosing()) return refuse(socket, 503, "RELAY_UNREACHABLE", "relay shutting down", ["Retry-After: 1"]);
    if (params.connectionCount() >= params.maxConnections) {
      params.onRefused?.("global");
      return refuse(socket, 503, "RATE_LIMITED", "too many connections on this relay", ["Retry-After: 5"]);
    }
    // The socket's own address: behind a reverse proxy this bounds the proxy, so raise it there.
    const raw = req.socket.remoteAddress ?? "unknown";
    // An IPv4 client seen on a dual-stack socket (::ffff:1.2.3.4) is the same client as 1.2.3.4.
    const address = raw.startsWith("::ffff:") && raw.includes(".") ? raw.slice(7) : raw;
    if ((perAddress.get(address) ?? 0) >= params.maxConnectionsPerAddress) {
      params.onRefused?.("address");
      return refuse(socket, 429, "RATE_LIMITED", "too many connections from this address", ["Retry-After: 10"]);
    }
    take(address);
    let held = true;
    const free = () => {
      if (held) release(address);
      held = false;
    };
    // The header wins when both are given; a browser, which cannot set it, offers the token as a subprotocol.
    const token = bearerToken(req.headers.authorization) ?? subprotocolToken(req.headers["sec-websocket-protocol"]);
    params.authenticate(token).then(
      (claims) => {
        if (socket.destroyed) return free();
        if (params.isClosing()) {
          free();
          return refuse(socket, 503, "RELAY_UNREACHABLE", "relay shutting down", ["Retry-After: 1"]);
        }
        if (params.userConnectionCount(claims.sub) >= params.maxConnectionsPerUser) {
          free();
          params.onRefused?.("user");
          return refuse(socket, 429, "RATE_LIMITED", "too many connections for this user", ["Retry-After: 10"]);
        }
        // handleUpgrade completes synchronously here (no verifyClient), so the user's count is exact.
        socket.once("close", free);
        params.wss.handleUpgrade(req, socket, head, (ws) => params.onConnection(ws, claims, free, { early }));
      },
      (error) => {
        free();
        if (socket.destroyed) return;
        const code: ErrorCode = isChatError(error) ? error.code : "UNAUTHORIZED";
        const message = isChatError(error) ? error.message : "session token could not be checked";
        // RFC 6750 §3: a Bearer challenge with every 401.
        refuse(socket, 401, code, message, [`WWW-Authenticate: Bearer realm="eth-chat", error="invalid_token"`]);
      },
    );
  };
}
