/**
 * The relay's TLS certificate: the operator's PEM files, or a self-signed certificate generated on first
 * start into DATA_DIR and reused after, so that clients can pin it on first use (trust on first use, as
 * SSH does). The key is an ECDSA P-256 key (RFC 5480) signed with SHA-256; TLS itself is negotiated by
 * Node (TLS 1.2+ per RFC 8446/5246).
 */
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { generate } from "selfsigned";

export interface TlsMaterial {
  cert: string;
  key: string;
  /** where they came from, for the start-up log line */
  source: "files" | "generated" | "reused";
  certFile: string;
}

export const GENERATED_CERT_FILE = "tls-cert.pem";
export const GENERATED_KEY_FILE = "tls-key.pem";

export async function loadOrCreateCertificate(params: {
  certFile: string | null;
  keyFile: string | null;
  dataDir: string;
  host: string;
}): Promise<TlsMaterial> {
  if (params.certFile && params.keyFile) {
    return {
      cert: await readFile(params.certFile, "utf8"),
      key: await readFile(params.keyFile, "utf8"),
      source: "files",
      certFile: params.certFile,
    };
  }
  const certFile = path.join(params.dataDir, GENERATED_CERT_FILE);
  const keyFile = path.join(params.dataDir, GENERATED_KEY_FILE);
  try {
    return { cert: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8"), source: "reused", certFile };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const altNames: { type: 2 | 7; value?: string; ip?: string }[] = [
    { type: 2, value: "localhost" },
    { type: 7, ip: "127.0.0.1" },
    { type: 7, ip: "::1" },
  ];
  if (/^[0-9.]+$/.test(params.host) || params.host.includes(":")) {
    if (!["127.0.0.1", "::1", "0.0.0.0", "::"].includes(params.host)) altNames.push({ type: 7, ip: params.host });
  } else if (params.host !== "localhost") {
    altNames.push({ type: 2, value: params.host });
  }
  const pems = await generate([{ name: "commonName", value: "eth-chat relay" }], {
    keyType: "ec",
    curve: "P-256",
    algorithm: "sha256",
    notAfterDate: new Date(Date.now() + 10 * 365 * 86_400_000),
    extensions: [
      { name: "basicConstraints", cA: false },
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames },
    ],
  } as any);
  await mkdir(params.dataDir, { recursive: true });
  // The key first, owner-only; `wx` so two relays starting at once do not overwrite each other's pair.
  try {
    await writeFile(keyFile, pems.private, { mode: 0o600, flag: "wx" });
    await writeFile(certFile, pems.cert, { flag: "wx" });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    await new Promise((r) => setTimeout(r, 200));
    return { cert: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8"), source: "reused", certFile };
  }
  await chmod(keyFile, 0o600);
  return { cert: pems.cert, key: pems.private, source: "generated", certFile };
}
