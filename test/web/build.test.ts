/**
 * scripts/build-web.ts: index.html has no inline script or style and pins each asset by SRI; file names
 * are content-hashed; a rebuild into the same folder leaves exactly the new build; a folder that no build
 * wrote is never replaced; an esbuild failure is one clear error naming file and line.
 */
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { HASHED_ASSET } from "../../relay/http/web-client";
import { BUILD_MARKER, buildWebClient, WebBuildError } from "../../scripts/build-web";

describe("web client build (scripts/build-web.ts)", function () {
  this.timeout(300_000);
  let work: string;

  before(() => {
    work = mkdtempSync(path.join(tmpdir(), "eth-chat-web-build-"));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it("writes index.html with the module script and stylesheet pinned by sha384, and nothing inline", async () => {
    const outDir = path.join(work, "out");
    const build = await buildWebClient({ outDir });
    expect(build.files[0]).to.equal("index.html");
    for (const name of build.files.slice(1)) expect(name).to.match(HASHED_ASSET);
    expect(readdirSync(outDir).sort()).to.deep.equal([...build.files, BUILD_MARKER].sort());
    const html = readFileSync(path.join(outDir, "index.html"), "utf8");
    expect(html).to.equal(build.indexHtml);
    // Every <script> has a src, no style element or attribute, no inline handler.
    expect(html.match(/<script\b[^>]*>/g)).to.have.length(1);
    expect(html).not.to.match(/<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=/i);
    for (const asset of build.assets.filter((a) => a.kind !== "other")) {
      const bytes = readFileSync(path.join(outDir, asset.name));
      const integrity = `sha384-${createHash("sha384").update(bytes).digest("base64")}`;
      const tag = asset.kind === "js" ? `<script type="module" src="/${asset.name}" integrity="${integrity}" crossorigin="anonymous"></script>` : `<link rel="stylesheet" href="/${asset.name}" integrity="${integrity}" crossorigin="anonymous">`;
      expect(html).to.include(tag);
      if (asset.kind === "js") expect(createHash("sha256").update(bytes).digest("hex")).to.equal(build.bundleSha256);
    }
  });

  it("a rebuild into the same folder replaces the old build; a folder it did not write is refused", async () => {
    const outDir = path.join(work, "again");
    await buildWebClient({ outDir });
    writeFileSync(path.join(outDir, "main-OLDOLDOL.js"), "stale");
    const build = await buildWebClient({ outDir });
    expect(readdirSync(outDir).sort()).to.deep.equal([...build.files, BUILD_MARKER].sort());

    const foreign = path.join(work, "foreign");
    mkdirSync(foreign);
    writeFileSync(path.join(foreign, "keep.txt"), "mine");
    await buildWebClient({ outDir: foreign }).then(
      () => expect.fail("built over a folder it did not write"),
      (error) => expect(String(error.message)).to.match(/not empty and was not written by this build/),
    );
    expect(readdirSync(foreign)).to.deep.equal(["keep.txt"]);
  });

  it("fails with one error naming the file and line when esbuild fails (a Node built-in, a missing module)", async () => {
    const entry = path.join(work, "entry.ts");
    writeFileSync(entry, 'import { readFileSync } from "node:fs";\nimport "./missing";\nconsole.log(readFileSync);\n');
    const error = await buildWebClient({ outDir: path.join(work, "broken"), entry }).then(
      () => expect.fail("built"),
      (e) => e,
    );
    expect(error).to.be.instanceOf(WebBuildError);
    expect(error.message).to.include("web client build failed");
    expect(error.message).to.match(/entry\.ts:1:\d+: Could not resolve "node:fs"/);
    expect(error.message).to.match(/entry\.ts:2:\d+: Could not resolve "\.\/missing"/);
    expect(readdirSync(work)).not.to.include("broken");
  });
});
