/**
 * The relay's HTTP API (protocol/wire.ts) over https with the pinned certificate (relay-tls.ts).
 * Answers are validated with the wire schemas; relay errors keep the relay's stable code.
 */
import http from "node:http";
import https from "node:https";
import type tls from "node:tls";
import type { z } from "zod";
import { ChatError } from "../protocol/errors";
import { ErrorBody, WS_PATH } from "../protocol/wire";
import type { Output } from "./output";
import { certificateChanged, isCertificateError, pinnedTlsOptions, probeCertificate, relayOrigin } from "./relay-tls";
import type { RelayPinStore } from "./stores";

const TIMEOUT_MS = 60_000; // a registration waits for its block

export class RelayHttp {
  readonly url: URL;
  readonly origin: string;
  private tlsOptions?: tls.ConnectionOptions;

  constructor(
    relayUrl: string,
    private readonly pins: RelayPinStore,
    private readonly out: Output,
  ) {
    this.url = relayOrigin(relayUrl);
    this.origin = this.url.origin;
  }

  get secure(): boolean {
    return this.url.protocol === "https:";
  }

  /** TLS options for this relay, pinning the certificate on first use. */
  async tls(): Promise<tls.ConnectionOptions> {
    if (!this.secure) return {};
    if (this.tlsOptions) return this.tlsOptions;
    let pin = this.pins.get(this.origin);
    if (!pin?.certSha256 || !pin.certPem) {
      const seen = await probeCertificate(this.url);
      pin = this.pins.update(this.origin, { certSha256: seen.fingerprint, certPem: seen.pem, pinnedAt: Date.now() });
      this.out.info(`Pinned the TLS certificate of ${this.origin} on first use: sha256 ${seen.fingerprint}`);
    }
    this.tlsOptions = pinnedTlsOptions({ certSha256: pin.certSha256!, certPem: pin.certPem! });
    return this.tlsOptions;
  }

  /** Turns a connection failure into CERTIFICATE_CHANGED or RELAY_UNREACHABLE (with the address tried). */
  connectionError(error: unknown): ChatError {
    if (isCertificateError(error)) {
      const pinned = this.pins.get(this.origin)?.certSha256 ?? "";
      return certificateChanged(this.origin, pinned);
    }
    const e = error as NodeJS.ErrnoException;
    return new ChatError("RELAY_UNREACHABLE", `relay unreachable at ${this.origin} (${e?.code ?? e?.message ?? "error"})`);
  }

  /** `token`: a session token sent as `Authorization: Bearer` (RFC 6750), for routes that act for the session's user. */
  async request<T extends z.ZodTypeAny>(method: "GET" | "POST", path: string, body: unknown, schema: T, token?: string): Promise<z.infer<T>> {
    const tlsOptions = await this.tls();
    const target = new URL(path, this.url);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const options: https.RequestOptions = {
        method,
        headers: {
          accept: "application/json",
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(payload ? { "content-type": "application/json", "content-length": String(payload.length) } : {}),
        },
        timeout: TIMEOUT_MS,
        ...tlsOptions,
        agent: false,
      };
      const request = (this.secure ? https : http).request(target, options, (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
        response.on("error", reject);
      });
      request.on("timeout", () => request.destroy(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })));
      request.on("error", (error) => reject(this.connectionError(error)));
      request.end(payload);
    });
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      throw new ChatError("RELAY_UNREACHABLE", `relay at ${this.origin} answered ${method} ${path} with status ${status} and no JSON`);
    }
    if (status >= 400) {
      const parsed = ErrorBody.safeParse(json);
      if (!parsed.success) throw new ChatError("RELAY_UNREACHABLE", `relay at ${this.origin} answered ${method} ${path} with status ${status}`);
      throw new ChatError(parsed.data.error.code, parsed.data.error.message, { status });
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ChatError("RELAY_UNREACHABLE", `relay at ${this.origin} sent a malformed answer to ${path}: ${issue.path.join(".")}: ${issue.message}`);
    }
    return parsed.data;
  }

  get<T extends z.ZodTypeAny>(path: string, schema: T) {
    return this.request("GET", path, undefined, schema);
  }

  post<T extends z.ZodTypeAny>(path: string, body: unknown, schema: T, options: { token?: string } = {}) {
    return this.request("POST", path, body, schema, options.token);
  }

  /** The WebSocket URL of the relay. */
  wsUrl(): string {
    const url = new URL(WS_PATH, this.url);
    url.protocol = this.secure ? "wss:" : "ws:";
    return url.toString();
  }
}
