/**
 * protocol/ and client-core/ run in a browser: no Buffer, no node: modules, no require(), no eth-crypto (it needs the global
 * Buffer at run time). Checked on the syntax tree of every .ts file (comments may name them), then by bundling
 * all of protocol/ with esbuild for platform=browser (a Node built-in anywhere in the import graph fails the
 * build) and running that bundle in a sandbox that has only what a browser page has: seal and open an
 * envelope, derive a credential, compute a safety number, byte for byte as in Node.
 */
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import vm from "node:vm";
import * as esbuild from "esbuild";
import ts from "typescript";
import { credentialSalt, deriveCredential, INSECURE_TEST_ARGON2_PARAMS } from "../../protocol/credential-derive";
import { pepperCredential } from "../../protocol/credential";
import { sealEnvelope, type InnerMessageV1 } from "../../protocol/envelope";
import { publicKeyOf } from "../../protocol/keys";
import { safetyNumber } from "../../protocol/safety-number";
import { expect } from "../helpers/chai";

const ROOT = path.join(__dirname, "..", "..");
const PROTOCOL_DIR = path.join(ROOT, "protocol");
/** The client engine every client runs (the CLI and the browser): browser-safe under the same rules. */
const CLIENT_CORE_DIR = path.join(ROOT, "client-core");

function protocolSources(dir = PROTOCOL_DIR): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return protocolSources(full);
    return entry.name.endsWith(".ts") ? [full] : [];
  });
}

const FORBIDDEN_MODULE = /^(node:|eth-crypto($|\/))|^(crypto|fs|path|os|buffer|stream|util|child_process|net|http|https|zlib|worker_threads)$/;

/** Every Node-only use in one file's text, as "line: what". */
function nodeOnlyUses(fileName: string, text: string): string[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.ES2022, true);
  const found: string[] = [];
  const at = (node: ts.Node, what: string) => found.push(`${source.getLineAndCharacterOfPosition(node.getStart()).line + 1}: ${what}`);
  const visit = (node: ts.Node): void => {
    if (ts.isIdentifier(node) && node.text === "Buffer") at(node, "Buffer");
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      if (FORBIDDEN_MODULE.test(node.moduleSpecifier.text)) at(node, `import "${node.moduleSpecifier.text}"`);
    }
    if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      if (FORBIDDEN_MODULE.test(node.argument.literal.text)) at(node, `import("${node.argument.literal.text}")`);
    }
    if (ts.isCallExpression(node)) {
      if (ts.isIdentifier(node.expression) && node.expression.text === "require") at(node, "require(...)");
      const [first] = node.arguments;
      if (node.expression.kind === ts.SyntaxKind.ImportKeyword && first && ts.isStringLiteral(first) && FORBIDDEN_MODULE.test(first.text)) {
        at(node, `import("${first.text}")`);
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** Every module under `dir` bundled for a page (a Node built-in anywhere in the graph fails the build). */
async function bundleForBrowser(dir: string, output: { format: "esm" } | { format: "iife"; globalName: string }) {
  const entry = protocolSources(dir)
    .filter((file) => !file.endsWith(".d.ts"))
    .map((file, i) => `export * as m${i} from ${JSON.stringify("./" + path.relative(dir, file).replace(/\\/g, "/"))};`)
    .join("\n");
  const result = await esbuild.build({
    stdin: { contents: entry, resolveDir: dir, loader: "ts", sourcefile: "browser-entry.ts" },
    bundle: true,
    platform: "browser",
    ...output,
    target: "es2022",
    write: false,
    metafile: true,
    logLevel: "silent",
  });
  expect(result.errors).to.deep.equal([]);
  return result;
}

describe("protocol/ and client-core/ are browser-safe", function () {
  this.timeout(120_000);

  it("no .ts file under protocol/ or client-core/ uses Buffer, a node: module, require() or eth-crypto", () => {
    const files = [...protocolSources(), ...protocolSources(CLIENT_CORE_DIR)];
    expect(files.length).to.be.greaterThan(35);
    const offences = files.flatMap((file) => nodeOnlyUses(file, readFileSync(file, "utf8")).map((use) => `${path.relative(ROOT, file)}:${use}`));
    expect(offences).to.deep.equal([]);
  });

  it("client-core/ bundles for platform=browser with no Node module anywhere in its import graph", async () => {
    const result = await bundleForBrowser(CLIENT_CORE_DIR, { format: "esm" });
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.some((input) => input.includes("mls-device.ts"))).to.equal(true);
    expect(inputs.filter((input) => /eth-crypto|(^|\/)node:|buffer\/|(^|\/)cli\/|(^|\/)relay\//.test(input))).to.deep.equal([]);
  });

  it("the guard itself catches each kind of Node-only use, and not mere words in comments", () => {
    const text = [
      'import { createHash } from "node:crypto";',
      'import type * as E from "eth-crypto";',
      'const fs = require("fs");',
      'const b = Buffer.from("x");',
      "// Buffer, require(, node: and eth-crypto in a comment are fine",
      "const c = new ArrayBuffer(1);",
    ].join("\n");
    expect(nodeOnlyUses("probe.ts", text)).to.deep.equal(['1: import "node:crypto"', '2: import "eth-crypto"', "3: require(...)", "4: Buffer"]);
  });

  it("bundles for platform=browser, and the bundle seals, opens and derives byte for byte as Node does, without Node's globals", async () => {
    const result = await bundleForBrowser(PROTOCOL_DIR, { format: "iife", globalName: "protocolBundle" });
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.filter((input) => /eth-crypto|(^|\/)node:|buffer\//.test(input))).to.deep.equal([]);
    const code = result.outputFiles[0].text;
    // Allow-list of globals a page has (no Buffer, process, require, global, setImmediate).
    const page = vm.createContext({
      crypto: globalThis.crypto,
      TextEncoder,
      TextDecoder,
      atob,
      btoa,
      WebAssembly: (globalThis as Record<string, unknown>).WebAssembly,
      URL,
      console,
      setTimeout,
      clearTimeout,
      queueMicrotask,
      structuredClone,
    });
    vm.runInContext("globalThis.self = globalThis; globalThis.window = globalThis;", page);
    vm.runInContext(`${code}\nglobalThis.protocolBundle = protocolBundle;`, page, { filename: "protocol-bundle.js" });
    expect(vm.runInContext("typeof Buffer + typeof process + typeof require", page)).to.equal("undefinedundefinedundefined");

    const modules = Object.values(vm.runInContext("protocolBundle", page) as Record<string, Record<string, unknown>>);
    const exported = <T>(name: string): T => {
      const holder = modules.find((module) => name in module);
      if (!holder) throw new Error(`the bundle does not export ${name}`);
      return holder[name] as T;
    };

    const alice = "0x" + "11".repeat(32);
    const bob = "0x" + "22".repeat(32);
    const inner: InnerMessageV1 = {
      v: 1,
      sender: "alice",
      recipient: "bob",
      id: "browser-1",
      timestamp: 1700000000000,
      senderKeyIndex: 0,
      recipientKeyIndex: 0,
      body: "héllo from a page 👋",
    };
    const deterministic = { iv: new Uint8Array(16).fill(1), ephemPrivateKey: new Uint8Array(32).fill(2) };
    const sealInPage = exported<typeof sealEnvelope>("sealEnvelope");
    const sealedInPage = await sealInPage({ inner, senderPrivateKey: alice, recipientPublicKey: publicKeyOf(bob), deterministic });
    expect(sealedInPage).to.equal(await sealEnvelope({ inner, senderPrivateKey: alice, recipientPublicKey: publicKeyOf(bob), deterministic }));

    // the page opens what Node sealed with fresh randomness
    const openInPage = exported<typeof import("../../protocol/envelope").openEnvelope>("openEnvelope");
    const dedupInPage = exported<typeof import("../../protocol/envelope").memoryDedupStore>("memoryDedupStore");
    const sealedInNode = await sealEnvelope({ inner, senderPrivateKey: alice, recipientPublicKey: publicKeyOf(bob) });
    const opened = await openInPage({
      envelope: sealedInNode,
      from: "alice",
      me: "bob",
      privateKeys: [{ index: 0, privateKey: bob }],
      lookupSenderKey: async () => publicKeyOf(alice),
      dedup: dedupInPage(),
    });
    expect(JSON.parse(JSON.stringify(opened.inner))).to.deep.equal(inner);

    const account = { username: "alice", chainId: 31337, contractAddress: "0x5FbDB2315678afecb367f642d5aecc5e3a3b2e5c" };
    const saltInPage = exported<typeof credentialSalt>("credentialSalt")(account);
    expect(Array.from(saltInPage)).to.deep.equal(Array.from(credentialSalt(account)));
    const derive = { ...account, password: "correct horse", argon2: INSECURE_TEST_ARGON2_PARAMS, allowInsecureParams: true };
    expect(await exported<typeof deriveCredential>("deriveCredential")(derive)).to.equal(await deriveCredential(derive));
    const pepper = { pepper: new Uint8Array(32).fill(5), username: "alice", credential: "0x" + "ab".repeat(32) };
    expect(exported<typeof pepperCredential>("pepperCredential")(pepper)).to.equal(pepperCredential(pepper));
    const pair = { a: { username: "alice", publicKey: publicKeyOf(alice) }, b: { username: "bob", publicKey: publicKeyOf(bob) } };
    expect(exported<typeof safetyNumber>("safetyNumber")(pair)).to.equal(safetyNumber(pair));
  });
});
