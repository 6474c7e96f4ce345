/**
 * The web client's import graph: it bundles for platform=browser with no Node built-in anywhere (esbuild
 * fails the build on one), and web/ imports neither relay/ nor cli/ nor chain/bytecode.ts, nor the
 * typechain-types index (one factory file at a time keeps the bundle small).
 */
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import * as esbuild from "esbuild";
import { expect } from "../helpers/chai";

const ROOT = path.join(__dirname, "..", "..");
const WEB_SRC = path.join(ROOT, "web", "src");

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sources(full);
    return entry.name.endsWith(".ts") ? [full] : [];
  });
}

describe("web client bundle", function () {
  this.timeout(120_000);

  it("web/src imports nothing from relay/, cli/, chain/bytecode or the typechain-types index", () => {
    const offences: string[] = [];
    for (const file of sources(WEB_SRC)) {
      for (const match of readFileSync(file, "utf8").matchAll(/(?:from|import)\s*\(?\s*"([^"]+)"/g)) {
        const target = path.relative(ROOT, path.resolve(path.dirname(file), match[1]));
        if (!match[1].startsWith(".")) continue;
        if (/^(relay|cli)(\/|$)/.test(target) || target === "chain/bytecode" || target === "typechain-types" || target === "typechain-types/index") {
          offences.push(`${path.relative(ROOT, file)} imports ${match[1]}`);
        }
      }
    }
    expect(offences).to.deep.equal([]);
  });

  it("bundles web/src/main.ts for the browser with no Node built-in in the graph", async () => {
    const result = await esbuild.build({
      entryPoints: [path.join(WEB_SRC, "main.ts")],
      bundle: true,
      platform: "browser",
      format: "esm",
      write: false,
      outdir: "/nonexistent-out",
      metafile: true,
      logLevel: "silent",
    });
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.filter((input) => /^node:|(^|\/)(relay|cli)\//.test(input))).to.deep.equal([]);
    expect(inputs.some((input) => input.endsWith("web/src/account.ts"))).to.equal(true);
    const outputs = result.outputFiles.map((file) => path.basename(file.path)).sort();
    expect(outputs).to.deep.equal(["main.css", "main.js"]);
    const js = result.outputFiles.find((file) => file.path.endsWith(".js"))!.text;
    expect(js).to.not.match(/\binnerHTML\s*=/);
  });
});
