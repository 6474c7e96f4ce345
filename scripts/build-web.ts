/**
 * Builds the browser client (web/src/main.ts and the styles it imports) into one folder the relay serves
 * (WEB_CLIENT_DIR): esbuild bundles it for browsers as an ES module with content-hashed file names, and
 * index.html is written here, with no inline script or style and every asset pinned by Subresource
 * Integrity (sha384), so that the strict CSP holds and a changed asset is refused by the browser.
 *
 *   npx tsx scripts/build-web.ts [outDir]     (default dist/web) prints the files and the bundle's SHA-256
 *
 * The build is reproducible: the same sources give the same bytes, so anyone can rebuild a commit and
 * compare the SHA-256 of main-*.js with what a relay serves (README, "The web client").
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const ROOT = path.resolve(__dirname, "..");

/** The client's entry, relative to the repository root. */
export const WEB_ENTRY = "web/src/main.ts";
export const DEFAULT_WEB_OUT_DIR = path.join(ROOT, "dist", "web");
/** The largest gzipped bundle (JavaScript and CSS) accepted: bench:web-bundle and its test check it. */
export const WEB_BUNDLE_LIMIT_GZIP_BYTES = 300 * 1024;
/** Written into every build folder; a non-empty folder without it is never replaced (it is not ours). */
export const BUILD_MARKER = "eth-chat-web-build.json";

export class WebBuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebBuildError";
  }
}

export interface WebAsset {
  /** file name in the output folder (served at /<name>) */
  name: string;
  kind: "js" | "css" | "other";
  bytes: number;
  /** size gzipped at level 9 (what a transfer costs) */
  gzipBytes: number;
  /** the Subresource Integrity value, sha384-<base64> */
  integrity: string;
  sha256: string;
}

export interface WebBuild {
  outDir: string;
  /** every file served: index.html first, then the hashed assets */
  files: string[];
  /** the text of index.html */
  indexHtml: string;
  /** SHA-256 (hex) of the JavaScript bundle, main-<hash>.js */
  bundleSha256: string;
  /** gzipped size of the JavaScript and CSS together */
  gzipBytes: number;
  assets: WebAsset[];
}

/**
 * zod's namespace object re-exports every locale (about 250 KB minified) and a bundler cannot drop what a
 * namespace object holds; the client only ever shows zod's English messages, so its locale index becomes
 * one that holds English alone.
 */
const zodEnglishOnly: esbuild.Plugin = {
  name: "zod-english-only",
  setup(build) {
    build.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[\\/]node_modules[\\/]zod[\\/]/.test(args.importer) ? { path: "zod-locales-en", namespace: "zod-english-only", pluginData: { dir: args.resolveDir } } : undefined,
    );
    build.onLoad({ filter: /.*/, namespace: "zod-english-only" }, (args) => ({
      contents: 'export { default as en } from "../locales/en.js";',
      resolveDir: (args.pluginData as { dir: string }).dir,
      loader: "js",
    }));
  },
};

/**
 * The client names no contract or account by ENS: every address it uses is hex, from the chain or typed by
 * the user. ethers' ENS normalizer (UTS-46 tables, about 36 KB) becomes one that refuses any name.
 */
const noEnsNames: esbuild.Plugin = {
  name: "no-ens-names",
  setup(build) {
    build.onResolve({ filter: /^@adraffy\/ens-normalize$/ }, () => ({ path: "ens-normalize", namespace: "no-ens-names" }));
    build.onLoad({ filter: /.*/, namespace: "no-ens-names" }, () => ({
      contents: 'export function ens_normalize() { throw new Error("this client resolves no ENS names: use a 0x address"); }',
      loader: "js",
    }));
  },
};

/** esbuild's options for a browser bundle; the benchmark bundles protocol/ alone the same way. */
export function browserBundleOptions(params: { minify: boolean }): esbuild.BuildOptions {
  return {
    absWorkingDir: ROOT,
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "chrome120",
    minify: params.minify,
    // Content-hashed names: an asset's URL changes with its bytes, so it can be cached as immutable.
    entryNames: "[name]-[hash]",
    chunkNames: "[name]-[hash]",
    assetNames: "[name]-[hash]",
    loader: { ".svg": "file", ".png": "file", ".woff2": "file", ".wasm": "file" },
    // Libraries that test process.env.NODE_ENV must not reach for a `process` a page does not have.
    define: { "process.env.NODE_ENV": '"production"' },
    charset: "utf8",
    sourcemap: false,
    metafile: true,
    logLevel: "silent",
    plugins: [zodEnglishOnly, noEnsNames],
  };
}

/** esbuild's errors as lines naming file:line:column. */
function describeFailure(error: unknown): string {
  const messages = (error as { errors?: esbuild.Message[] }).errors;
  if (!Array.isArray(messages) || messages.length === 0) return error instanceof Error ? error.message : String(error);
  return messages
    .slice(0, 20)
    .map((m) => `  ${m.location ? `${m.location.file}:${m.location.line}:${m.location.column}: ` : ""}${m.text}`)
    .join("\n");
}

function describeAsset(dir: string, name: string): WebAsset {
  const bytes = readFileSync(path.join(dir, name));
  return {
    name,
    kind: name.endsWith(".js") ? "js" : name.endsWith(".css") ? "css" : "other",
    bytes: bytes.length,
    gzipBytes: gzipSync(bytes, { level: 9 }).length,
    integrity: `sha384-${createHash("sha384").update(bytes).digest("base64")}`,
    sha256: createHash("sha256").update(bytes).digest("hex"),
  };
}

/** Only names esbuild made go into attributes; checked anyway, since they are written into HTML. */
function attribute(value: string): string {
  if (!/^[A-Za-z0-9_.\-/+=]+$/.test(value)) throw new WebBuildError(`unexpected character in an asset name or hash: ${value}`);
  return value;
}

function indexHtml(js: WebAsset, css: WebAsset | undefined): string {
  return [
    "<!doctype html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    "<title>eth-chat</title>",
    // No favicon request (it would 404): an empty data: icon, which img-src allows.
    '<link rel="icon" href="data:,">',
    ...(css ? [`<link rel="stylesheet" href="/${attribute(css.name)}" integrity="${attribute(css.integrity)}" crossorigin="anonymous">`] : []),
    `<script type="module" src="/${attribute(js.name)}" integrity="${attribute(js.integrity)}" crossorigin="anonymous"></script>`,
    "</head>",
    "<body>",
    "<noscript>eth-chat runs in your browser: enable JavaScript for this page.</noscript>",
    "</body>",
    "</html>",
    "",
  ].join("\n");
}

/** Replaces `outDir` by `staging`, refusing to remove a non-empty folder that no build wrote. */
function swapIn(staging: string, outDir: string): void {
  if (existsSync(outDir)) {
    const entries = readdirSync(outDir);
    if (entries.length > 0 && !entries.includes(BUILD_MARKER)) {
      throw new WebBuildError(`${outDir} is not empty and was not written by this build; choose another output folder`);
    }
    const old = `${outDir}.old-${process.pid}-${Date.now()}`;
    renameSync(outDir, old);
    renameSync(staging, outDir);
    rmSync(old, { recursive: true, force: true });
  } else {
    mkdirSync(path.dirname(outDir), { recursive: true });
    renameSync(staging, outDir);
  }
}

/**
 * Bundles web/src/main.ts (or `entry`) into `outDir`, which afterwards holds exactly index.html, the hashed
 * assets and the build marker (older builds' files go). Throws WebBuildError naming each problem.
 */
export async function buildWebClient(params: { outDir: string; minify?: boolean; entry?: string }): Promise<WebBuild> {
  const outDir = path.resolve(params.outDir);
  const entry = params.entry ?? WEB_ENTRY;
  if (!existsSync(path.resolve(ROOT, entry))) throw new WebBuildError(`web client build failed: no entry ${entry}`);
  const staging = `${outDir}.building-${process.pid}-${Date.now()}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  try {
    let result: esbuild.BuildResult<{ metafile: true }>;
    try {
      result = (await esbuild.build({
        ...browserBundleOptions({ minify: params.minify ?? true }),
        entryPoints: { main: entry },
        outdir: staging,
        write: true,
      })) as esbuild.BuildResult<{ metafile: true }>;
    } catch (error) {
      throw new WebBuildError(`web client build failed:\n${describeFailure(error)}`);
    }
    const outputs = Object.entries(result.metafile.outputs);
    const [jsPath, jsMeta] = outputs.find(([output, meta]) => output.endsWith(".js") && meta.entryPoint !== undefined) ?? [];
    if (!jsPath || !jsMeta) throw new WebBuildError("web client build failed: esbuild wrote no JavaScript entry");
    const names = outputs.map(([output]) => path.basename(output));
    const js = describeAsset(staging, path.basename(jsPath));
    const cssName = jsMeta.cssBundle ? path.basename(jsMeta.cssBundle) : undefined;
    const assets = names.sort().map((name) => (name === js.name ? js : describeAsset(staging, name)));
    const css = assets.find((asset) => asset.name === cssName);
    const html = indexHtml(js, css);
    writeFileSync(path.join(staging, "index.html"), html);
    const gzipBytes = assets.filter((a) => a.kind !== "other").reduce((sum, a) => sum + a.gzipBytes, 0);
    const files = ["index.html", ...assets.map((a) => a.name)];
    writeFileSync(
      path.join(staging, BUILD_MARKER),
      `${JSON.stringify({ entry, bundleSha256: js.sha256, gzipBytes, files: assets.map(({ name, sha256, integrity }) => ({ name, sha256, integrity })) }, null, 2)}\n`,
    );
    swapIn(staging, outDir);
    return { outDir, files, indexHtml: html, bundleSha256: js.sha256, gzipBytes, assets };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.length > 1 || args[0]?.startsWith("-")) {
    process.stderr.write("usage: tsx scripts/build-web.ts [outDir]\n");
    process.exit(2);
  }
  const build = await buildWebClient({ outDir: args[0] ?? DEFAULT_WEB_OUT_DIR });
  process.stdout.write(`web client built into ${build.outDir}\n`);
  for (const asset of build.assets) process.stdout.write(`  ${asset.name}  ${asset.bytes} bytes (${asset.gzipBytes} gzipped)  ${asset.integrity}\n`);
  process.stdout.write(`  index.html\nbundle sha256: ${build.bundleSha256}\n`);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
