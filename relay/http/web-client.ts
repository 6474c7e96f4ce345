/**
 * The browser client, served at / from the folder scripts/build-web.ts wrote (WEB_CLIENT_DIR): index.html
 * and the content-hashed assets it names, nothing else (no directory listing, no other file of the folder;
 * every other path falls through to the relay's JSON 404). The files are read once at start and served from
 * memory, so no request path ever reaches the file system.
 *
 * Every answer carries a strict Content-Security-Policy (scripts and styles from this origin only, no
 * inline code, WebAssembly allowed for the argon2id and MLS code; connections to this relay and the user's
 * own chain RPC), and index.html pins each asset by Subresource Integrity, so a changed file is refused by
 * the browser. GET /client-config.json names the relay's own deployment, which the page offers as a default
 * on a local development chain only (it checks keys against the chain, never against the relay).
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import express, { type Request, type Response } from "express";
import type { ClientConfigResponse } from "../../protocol/wire";
import type { RegistryChain } from "../chain/registry";
import { ConfigError, type WebClientSettings } from "../config";

/** A built asset's name: esbuild's `[name]-[hash]` (8 characters of base32) and a type the client uses. */
export const HASHED_ASSET = /^[A-Za-z0-9_]+(?:[.-][A-Za-z0-9_]+)*-[A-Z0-9]{8}\.(js|css|wasm|svg|png|woff2)$/;

const CONTENT_TYPES: Record<string, string> = {
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  wasm: "application/wasm",
  svg: "image/svg+xml",
  png: "image/png",
  woff2: "font/woff2",
};

/** Only text compresses; fonts, images and wasm are sent as they are. */
const COMPRESSIBLE = new Set(["js", "css", "svg", "html"]);

interface ServedFile {
  body: Buffer;
  gzipped: Buffer | null;
  contentType: string;
  cacheControl: string;
}

/** The Content-Security-Policy of every page and asset of the client. */
export function webClientCsp(connectSrc: readonly string[]): string {
  return [
    "default-src 'none'",
    // wasm-unsafe-eval: WebAssembly (argon2id, MLS crypto) without allowing eval() of JavaScript.
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self'",
    "img-src 'self' data:",
    `connect-src ${["'self'", ...connectSrc].join(" ")}`,
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

function load(file: string, contentType: string, cacheControl: string, extension: string): ServedFile {
  const body = readFileSync(file);
  const gzipped = COMPRESSIBLE.has(extension) && body.length > 1024 ? gzipSync(body, { level: 9 }) : null;
  return { body, gzipped, contentType, cacheControl };
}

/** Reads the built folder: index.html and the hashed assets in it (other files are ignored, never served). */
function loadFolder(dir: string): Map<string, ServedFile> {
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) throw new Error("not a folder");
    names = readdirSync(dir);
  } catch (error) {
    throw new ConfigError("WEB_CLIENT_DIR", `cannot read the web client's folder ${dir} (${(error as Error).message}); build it with \`npx tsx scripts/build-web.ts ${dir}\``);
  }
  if (!names.includes("index.html")) {
    throw new ConfigError("WEB_CLIENT_DIR", `no index.html in ${dir}; build the client with \`npx tsx scripts/build-web.ts ${dir}\``);
  }
  const files = new Map<string, ServedFile>();
  // The page changes with every build: always revalidated (its ETag answers 304 when unchanged).
  files.set("/", load(path.join(dir, "index.html"), "text/html; charset=utf-8", "no-cache", "html"));
  for (const name of names) {
    const match = HASHED_ASSET.exec(name);
    if (!match) continue;
    const full = path.join(dir, name);
    if (!statSync(full).isFile()) continue;
    // A hashed name never changes content: cached for a year without revalidation.
    files.set(`/${name}`, load(full, CONTENT_TYPES[match[1]], "public, max-age=31536000, immutable", match[1]));
  }
  return files;
}

export function webClientRoutes(params: { settings: WebClientSettings & { dir: string }; chain: Pick<RegistryChain, "chainId" | "contractAddress"> }): express.Router {
  const files = loadFolder(params.settings.dir);
  const csp = webClientCsp(params.settings.connectSrc);
  const secure = (res: Response) => {
    res.setHeader("Content-Security-Policy", csp);
    res.setHeader("X-Content-Type-Options", "nosniff");
    res.setHeader("Referrer-Policy", "no-referrer");
  };

  const router = express.Router({ caseSensitive: true, strict: true });
  const serve = (req: Request, res: Response, file: ServedFile) => {
    secure(res);
    res.setHeader("Content-Type", file.contentType);
    res.setHeader("Cache-Control", file.cacheControl);
    res.setHeader("Vary", "Accept-Encoding");
    if (file.gzipped && req.acceptsEncodings("gzip", "identity") === "gzip") {
      res.setHeader("Content-Encoding", "gzip");
      return res.send(file.gzipped);
    }
    res.send(file.body);
  };

  router.get("/client-config.json", async (_req, res) => {
    const body: ClientConfigResponse = { chainId: (await params.chain.chainId()).toString(), contractAddress: params.chain.contractAddress };
    secure(res);
    res.setHeader("Cache-Control", "no-cache");
    res.json(body);
  });
  router.get(["/", "/index.html"], (req, res) => serve(req, res, files.get("/")!));
  router.get("/:asset", (req, res, next) => {
    const file = files.get(`/${req.params.asset}`);
    if (!file || req.params.asset === "index.html") return next();
    serve(req, res, file);
  });
  return router;
}
