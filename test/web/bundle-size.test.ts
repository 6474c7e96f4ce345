/**
 * The browser client's download stays bounded: the minified build of web/src (JavaScript and CSS, gzipped
 * at level 9) must not exceed WEB_BUNDLE_LIMIT_GZIP_BYTES (300 KiB; `npm run bench:web-bundle` prints the
 * figures and protocol/'s share). The build must also be reproducible: two builds give the same bytes.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { buildWebClient, WEB_BUNDLE_LIMIT_GZIP_BYTES } from "../../scripts/build-web";

describe("web client bundle size", function () {
  this.timeout(300_000);
  let work: string;

  before(() => {
    work = mkdtempSync(path.join(tmpdir(), "eth-chat-web-size-"));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it(`gzips to at most ${WEB_BUNDLE_LIMIT_GZIP_BYTES / 1024} KiB, and builds reproducibly`, async () => {
    const first = await buildWebClient({ outDir: path.join(work, "a"), minify: true });
    expect(first.assets.some((asset) => asset.kind === "js")).to.equal(true);
    expect(first.gzipBytes, `gzipped web bundle: ${first.gzipBytes} bytes`).to.be.at.most(WEB_BUNDLE_LIMIT_GZIP_BYTES);
    const second = await buildWebClient({ outDir: path.join(work, "b"), minify: true });
    expect(second.bundleSha256).to.equal(first.bundleSha256);
    expect(second.indexHtml).to.equal(first.indexHtml);
  });
});
