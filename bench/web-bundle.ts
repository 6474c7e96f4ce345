/**
 * What the browser client costs to download: scripts/build-web.ts's minified build, each JavaScript and CSS
 * file raw and gzipped (level 9), against a baseline of protocol/ alone (every module of it, bundled the same
 * way: esbuild, browser, ESM, chrome120, minified), the shared logic any client carries anyway.
 *
 *   npm run bench:web-bundle
 * Last line: {"bench":"web-bundle","web_bundle_gzip_bytes":..,"protocol_only_gzip_bytes":..,"limit_gzip_bytes":307200,...}
 * Exits 1 when the gzipped bundle is over the limit.
 */
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";
import { browserBundleOptions, buildWebClient, WEB_BUNDLE_LIMIT_GZIP_BYTES } from "../scripts/build-web";
import { log, result, ROOT } from "./lib";

const PROTOCOL_DIR = path.join(ROOT, "protocol");

function protocolModules(dir = PROTOCOL_DIR): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return protocolModules(full);
    return entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts") ? [full] : [];
  });
}

/** protocol/ alone: every module re-exported (namespaced, so nothing is shaken off), bundled as the client is. */
async function protocolOnly(outDir: string): Promise<{ bytes: number; gzipBytes: number }> {
  const entry = protocolModules()
    .map((file, i) => `export * as m${i} from ${JSON.stringify(`./${path.relative(PROTOCOL_DIR, file).split(path.sep).join("/")}`)};`)
    .join("\n");
  const built = await esbuild.build({
    ...browserBundleOptions({ minify: true }),
    stdin: { contents: entry, resolveDir: PROTOCOL_DIR, loader: "ts", sourcefile: "protocol-entry.ts" },
    outdir: outDir,
    write: false,
  });
  const js = built.outputFiles!.filter((file) => file.path.endsWith(".js"));
  return {
    bytes: js.reduce((sum, file) => sum + file.contents.length, 0),
    gzipBytes: js.reduce((sum, file) => sum + gzipSync(file.contents, { level: 9 }).length, 0),
  };
}

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;

async function main(): Promise<void> {
  const work = mkdtempSync(path.join(tmpdir(), "eth-chat-bench-web-"));
  try {
    const started = performance.now();
    const build = await buildWebClient({ outDir: path.join(work, "web"), minify: true });
    const buildMs = Math.round(performance.now() - started);
    for (const asset of build.assets) log(`${asset.name.padEnd(28)} ${kib(asset.bytes).padStart(10)} raw  ${kib(asset.gzipBytes).padStart(10)} gzip`);
    const sum = (kind: "js" | "css", field: "bytes" | "gzipBytes") => build.assets.filter((a) => a.kind === kind).reduce((s, a) => s + a[field], 0);
    const baseline = await protocolOnly(path.join(work, "protocol"));
    log(`${"protocol/ alone (js)".padEnd(28)} ${kib(baseline.bytes).padStart(10)} raw  ${kib(baseline.gzipBytes).padStart(10)} gzip`);
    log(`web bundle gzipped: ${kib(build.gzipBytes)} of ${kib(WEB_BUNDLE_LIMIT_GZIP_BYTES)} allowed; built in ${buildMs} ms; bundle sha256 ${build.bundleSha256}`);
    result({
      bench: "web-bundle",
      js_bytes: sum("js", "bytes"),
      js_gzip_bytes: sum("js", "gzipBytes"),
      css_bytes: sum("css", "bytes"),
      css_gzip_bytes: sum("css", "gzipBytes"),
      web_bundle_gzip_bytes: build.gzipBytes,
      protocol_only_bytes: baseline.bytes,
      protocol_only_gzip_bytes: baseline.gzipBytes,
      limit_gzip_bytes: WEB_BUNDLE_LIMIT_GZIP_BYTES,
      build_ms: buildMs,
      bundle_sha256: build.bundleSha256,
    });
    if (build.gzipBytes > WEB_BUNDLE_LIMIT_GZIP_BYTES) process.exitCode = 1;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
