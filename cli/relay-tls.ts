/**
 * Trust on first use for the relay's TLS certificate. The relay usually runs with a self-signed
 * certificate, so the CA system cannot vouch for it: the first contact records the SHA-256 fingerprint
 * of the certificate (and the certificate itself); later connections trust exactly that certificate
 * (as the only CA, with the fingerprint checked again in checkServerIdentity) and nothing else. A changed
 * certificate stops the client with CERTIFICATE_CHANGED until the person runs `chat trust-relay`.
 */
import { createHash, X509Certificate } from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import { ChatError } from "../protocol/errors";

export function relayOrigin(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ChatError("BAD_REQUEST", `--relay: not a URL: ${url}`);
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") throw new ChatError("BAD_REQUEST", "--relay: use an https:// URL");
  return parsed;
}

export function fingerprintOf(der: Buffer): string {
  return createHash("sha256")
    .update(der)
    .digest("hex")
    .toUpperCase()
    .match(/.{2}/g)!
    .join(":");
}

function serverName(hostname: string): string | undefined {
  return net.isIP(hostname) ? undefined : hostname; // SNI must not carry an IP address (RFC 6066 §3)
}

/** Connects without trusting anything and returns the certificate the server shows. */
export function probeCertificate(url: URL, timeoutMs = 10_000): Promise<{ fingerprint: string; pem: string }> {
  const port = Number(url.port || 443);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, servername: serverName(host), rejectUnauthorized: false });
    const timer = setTimeout(() => socket.destroy(new Error("timed out")), timeoutMs);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const cert = socket.getPeerCertificate(false);
      socket.end();
      if (!cert || !cert.raw) return reject(new ChatError("RELAY_UNREACHABLE", `relay at ${url.origin} showed no TLS certificate`));
      const pem = new X509Certificate(cert.raw).toString();
      resolve({ fingerprint: fingerprintOf(cert.raw), pem });
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new ChatError("RELAY_UNREACHABLE", `relay unreachable at ${url.origin} (${error.code ?? error.message})`));
    });
  });
}

/** TLS options that accept only the pinned certificate. */
export function pinnedTlsOptions(pin: { certSha256: string; certPem: string }): tls.ConnectionOptions {
  return {
    ca: [pin.certPem],
    rejectUnauthorized: true,
    // The CA check above already ties the chain to the pinned certificate; the host name in a
    // self-signed certificate is not meaningful, the fingerprint is.
    checkServerIdentity: (_host, cert) =>
      cert.fingerprint256 === pin.certSha256 ? undefined : new Error("CERTIFICATE_CHANGED"),
  };
}

const CERT_ERROR_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_HAS_EXPIRED",
]);

/** Whether a connection error means the server showed a certificate other than the pinned one. */
export function isCertificateError(error: unknown): boolean {
  const e = error as NodeJS.ErrnoException & { reason?: string };
  return Boolean(e && ((e.code && CERT_ERROR_CODES.has(e.code)) || /CERTIFICATE_CHANGED/.test(e.message ?? "")));
}

export function certificateChanged(origin: string, pinned: string): ChatError {
  return new ChatError(
    "CERTIFICATE_CHANGED",
    `the relay at ${origin} shows a different TLS certificate than the one pinned (sha256 ${pinned.slice(0, 23)}...); if you trust the change, run: chat trust-relay`,
  );
}
