/**
 * The relay cannot choose the client's source of truth. Real processes: one anvil chain holding the trusted
 * ChatRegistry, a second genuine ChatRegistry (a hostile operator's, where it could register everyone's name
 * first) and a look-alike with an admin key setter; a real relay in front of each; the real `chat` command.
 * A fresh client refuses the relays of the other two deployments and accepts the trusted one.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { NonceManager, Wallet, keccak256 } from "ethers";
import { connectRpc } from "../../chain/rpc";
import { compareRuntimeBytecode, loadCompiledRuntime, metadataTail, readRuntimeCode } from "../../chain/bytecode";
import { chooseTrustAnchor } from "../../cli/trust-anchor";
import { LookalikeRegistry__factory } from "../../typechain-types";
import { anvilPrivateKey, startAnvil, type AnvilNode } from "../helpers/anvil";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { runChat } from "../helpers/chat-process";
import { expect, expectThrownCode } from "../helpers/chai";

/** Deploys the look-alike (ChatRegistry plus an admin key setter) as a hostile operator would. */
async function deployLookalike(rpcUrl: string): Promise<{ address: string; deployBlock: number }> {
  const { provider } = await connectRpc(rpcUrl);
  try {
    const deployer = new NonceManager(new Wallet(anvilPrivateKey(2), provider));
    const contract = await new LookalikeRegistry__factory(deployer).deploy(new Wallet(anvilPrivateKey(1)).address, 60);
    const receipt = await contract.deploymentTransaction()!.wait();
    return { address: (await contract.getAddress()).toLowerCase(), deployBlock: receipt!.blockNumber };
  } finally {
    provider.destroy();
  }
}

describe("trust anchor: the client chooses its contract, checks its code, and says where the choice came from", function () {
  this.timeout(180_000);
  let anvil: AnvilNode;
  let tmp: string;
  let trusted: DeployedRegistry;
  let rival: DeployedRegistry;
  let lookalike: { address: string; deployBlock: number };
  const relays: Record<"trusted" | "rival" | "lookalike", RelayProcess> = {} as never;
  let homes = 0;
  const freshHome = () => path.join(tmp, `home-${++homes}`);
  const chat = (relay: RelayProcess, home: string, args: string[], options: { contract?: string | null; env?: Record<string, string>; input?: string } = {}) =>
    runChat({ home, relay: relay.url, rpc: anvil.url, args, contract: options.contract ?? null, env: options.env, input: options.input });
  /** The one "chat: CODE: ..." line of a failed command. */
  const errorLine = (stderr: string) => stderr.split("\n").filter((line) => line.startsWith("chat:"));

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-anchor-"));
    anvil = await startAnvil();
    trusted = await deployRegistry({ rpcUrl: anvil.url });
    rival = await deployRegistry({ rpcUrl: anvil.url });
    lookalike = await deployLookalike(anvil.url);
    const start = (name: keyof typeof relays, address: string, deployBlock: number) =>
      startRelayProcess({ rpcUrl: anvil.url, contractAddress: address, deployBlock, relayerKey: trusted.relayerKey, dataDir: path.join(tmp, `relay-${name}`) }).then(
        (relay) => (relays[name] = relay),
      );
    await Promise.all([
      start("trusted", trusted.address, trusted.deployBlock),
      start("rival", rival.address, rival.deployBlock),
      start("lookalike", lookalike.address, lookalike.deployBlock),
    ]);
  });

  after(async () => {
    await Promise.all(Object.values(relays).map((relay) => relay.stop()));
    await anvil?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  describe("runtime bytecode against the compiled ChatRegistry", () => {
    it("the deployed ChatRegistry matches with its immutables (chain id, address, reset delay) masked; a look-alike does not", async () => {
      const compiled = loadCompiledRuntime();
      expect(compiled.immutableRanges.length).to.be.greaterThan(0);
      const genuine = await readRuntimeCode(anvil.url, trusted.chainId, trusted.address);
      const second = await readRuntimeCode(anvil.url, trusted.chainId, rival.address);
      // Different addresses make different immutables (EIP712's cached address and domain separator) ...
      expect(Buffer.from(genuine).equals(Buffer.from(second))).to.equal(false);
      // ... and both are ChatRegistry's code.
      expect(compareRuntimeBytecode(genuine, compiled)).to.deep.equal({ matches: true, metadataDiffers: false });
      expect(compareRuntimeBytecode(second, compiled).matches).to.equal(true);

      const fake = compareRuntimeBytecode(await readRuntimeCode(anvil.url, trusted.chainId, lookalike.address), compiled);
      expect(fake.matches).to.equal(false);
      expect(fake.reason).to.match(/bytes|differs/);
      const none = compareRuntimeBytecode(await readRuntimeCode(anvil.url, trusted.chainId, new Wallet(anvilPrivateKey(5)).address), compiled);
      expect(none).to.include({ matches: false, reason: "there is no contract code at the address" });
    });

    it("another metadata hash is reported but accepted; one changed instruction byte is refused", async () => {
      const compiled = loadCompiledRuntime();
      const genuine = await readRuntimeCode(anvil.url, trusted.chainId, trusted.address);
      const tail = metadataTail(genuine)!;
      expect(tail.start + tail.length).to.equal(genuine.length);
      const otherBuild = Uint8Array.from(genuine);
      otherBuild[tail.start + 10] ^= 0xff; // inside the IPFS hash of the metadata
      expect(compareRuntimeBytecode(otherBuild, compiled)).to.deep.equal({ matches: true, metadataDiffers: true });

      const firstUnmasked = [...Array(genuine.length).keys()].find(
        (i) => i < tail.start && !compiled.immutableRanges.some((r) => i >= r.start && i < r.start + r.length) && i > 100,
      )!;
      const patched = Uint8Array.from(genuine);
      patched[firstUnmasked] ^= 0x01;
      expect(compareRuntimeBytecode(patched, compiled)).to.include({ matches: false, reason: `its code differs from the compiled ChatRegistry at byte ${firstUnmasked}` });
    });
  });

  describe("choosing the anchor (on the chain id the client's own RPC reports)", () => {
    const file = () => path.join(tmp, "anchor-choice", "deployment.json");
    before(() => {
      mkdirSync(path.dirname(file()), { recursive: true });
      writeFileSync(file(), JSON.stringify({ chainId: "31337", contractAddress: trusted.address, deployBlock: trusted.deployBlock }));
    });
    const known = () => ({ "31337": { contractAddress: rival.address, deployBlock: 7, note: "a test entry" } });

    it("--contract, then CHAT_CONTRACT, then the known deployments, then the local npm start deployment", () => {
      const base = { chainId: 31337n, localDeploymentFile: file(), rpcName: "rpc" };
      expect(chooseTrustAnchor({ ...base, contractOption: lookalike.address, contractSetting: rival.address, known: known() })).to.include({ source: "--contract", contractAddress: lookalike.address });
      expect(chooseTrustAnchor({ ...base, contractSetting: lookalike.address, known: known() })).to.include({ source: "CHAT_CONTRACT", contractAddress: lookalike.address });
      expect(chooseTrustAnchor({ ...base, known: known() })).to.include({ source: "known-deployments", contractAddress: rival.address.toLowerCase(), deployBlock: 7 });
      expect(chooseTrustAnchor(base)).to.include({ source: "npm start", contractAddress: trusted.address.toLowerCase(), deployBlock: trusted.deployBlock });
    });

    it("a local deployment file never decides on another chain; no anchor and a bad address stop with USAGE", () => {
      expectThrownCode(() => chooseTrustAnchor({ chainId: 1n, localDeploymentFile: file(), rpcName: "http://rpc" }), "USAGE", /chain 1 .*pass --contract ADDRESS/);
      expectThrownCode(() => chooseTrustAnchor({ chainId: 31337n, localDeploymentFile: path.join(tmp, "none.json"), rpcName: "rpc" }), "USAGE", /npm start/);
      expectThrownCode(() => chooseTrustAnchor({ chainId: 31337n, contractOption: "0x1234", localDeploymentFile: file(), rpcName: "rpc" }), "USAGE", /--contract: not a contract address/);
      // One letter's case changed: the EIP-55 checksum catches a typo that would name another contract.
      const checksummed = new Wallet(anvilPrivateKey(3)).address;
      const i = [...checksummed].findIndex((c, k) => k > 1 && /[a-fA-F]/.test(c));
      const flipped = checksummed[i] === checksummed[i].toUpperCase() ? checksummed[i].toLowerCase() : checksummed[i].toUpperCase();
      const typo = `${checksummed.slice(0, i)}${flipped}${checksummed.slice(i + 1)}`;
      expectThrownCode(() => chooseTrustAnchor({ chainId: 31337n, contractSetting: typo, localDeploymentFile: file(), rpcName: "rpc" }), "USAGE", /checksum/);
    });
  });

  describe("a fresh client against real relays", () => {
    it("refuses a relay that serves another genuine ChatRegistry: CHAIN_MISMATCH names both", async () => {
      const home = freshHome();
      const result = await chat(relays.rival, home, ["whois", "alice"], { contract: trusted.address });
      expect(result.code).to.equal(1);
      expect(errorLine(result.stderr)).to.deep.equal([
        `chat: CHAIN_MISMATCH: the relay at ${relays.rival.url} serves chain 31337 contract ${rival.address.toLowerCase()}, but you trust chain 31337 contract ${trusted.address.toLowerCase()} (from --contract); refusing`,
      ]);
      // Nothing of that deployment was pinned.
      const pins = JSON.parse(readFileSync(path.join(home, "relays.json"), "utf8"));
      expect(pins[relays.rival.url]?.contractAddress).to.equal(undefined);
    });

    it("refuses the look-alike even when it is the contract given as trusted: CONTRACT_MISMATCH, nothing pinned", async () => {
      const home = freshHome();
      const result = await chat(relays.lookalike, home, ["--password-stdin", "register", "alice"], { contract: lookalike.address, input: "alice-pw-123456\n", env: { CHAT_INSECURE_FAST_KDF: "1" } });
      expect(result.code).to.equal(1);
      const [line] = errorLine(result.stderr);
      expect(line).to.match(
        new RegExp(`^chat: CONTRACT_MISMATCH: contract ${lookalike.address} on chain 31337 \\(from --contract\\) is not the ChatRegistry this client was built with: its code (is \\d+ bytes|differs).*; refusing$`),
      );
      const pins = JSON.parse(readFileSync(path.join(home, "relays.json"), "utf8"));
      expect(pins[relays.lookalike.url]?.contractAddress).to.equal(undefined);
    });

    it("refuses the rival relay also when the trusted contract comes from the local npm start deployment", async () => {
      const dataDir = path.join(tmp, "npm-start-data");
      mkdirSync(dataDir, { recursive: true });
      writeFileSync(path.join(dataDir, "deployment.json"), JSON.stringify({ chainId: "31337", contractAddress: trusted.address, deployBlock: trusted.deployBlock }));
      const result = await chat(relays.rival, freshHome(), ["whois", "alice"], { env: { DATA_DIR: dataDir } });
      expect(result.code).to.equal(1);
      expect(errorLine(result.stderr)[0]).to.include(`chat: CHAIN_MISMATCH: the relay at ${relays.rival.url} serves chain 31337 contract ${rival.address.toLowerCase()}, but you trust`);
      expect(errorLine(result.stderr)[0]).to.include(`(from the local deployment npm start wrote (${path.join(dataDir, "deployment.json")}))`);

      const accepted = await chat(relays.trusted, freshHome(), ["--json", "status"], { env: { DATA_DIR: dataDir } });
      expect(accepted.code, accepted.stderr).to.equal(0);
      expect(accepted.json.find((o) => o.type === "status")).to.include({ contractSource: "npm start", contractAddress: trusted.address.toLowerCase(), contractCheck: "ok" });
    });

    it("with no anchor at all, stops and asks for --contract", async () => {
      const result = await chat(relays.trusted, freshHome(), ["whois", "alice"], { env: { DATA_DIR: path.join(tmp, "empty-data") } });
      expect(result.code).to.equal(1);
      expect(errorLine(result.stderr)[0]).to.match(/^chat: USAGE: no trusted ChatRegistry is known for chain 31337 .*pass --contract ADDRESS \(or set CHAT_CONTRACT\)/);
    });

    it("accepts the trusted relay: registers, pins the code's hash once, and `chat status` shows chain, contract and source", async () => {
      const home = freshHome();
      const env = { CHAT_INSECURE_FAST_KDF: "1", CHAT_CONTRACT: trusted.address };
      const registered = await chat(relays.trusted, home, ["--password-stdin", "register", "alice"], { env, input: "alice-pw-123456\n" });
      expect(registered.code, registered.stderr).to.equal(0);
      expect(registered.stderr).to.include(`Pinned chain 31337, contract ${trusted.address.toLowerCase()} for ${relays.trusted.url} (from CHAT_CONTRACT; its code is ChatRegistry's`);

      const code = await readRuntimeCode(anvil.url, trusted.chainId, trusted.address);
      const pin = JSON.parse(readFileSync(path.join(home, "relays.json"), "utf8"))[relays.trusted.url];
      expect(pin).to.include({ chainId: "31337", contractAddress: trusted.address.toLowerCase(), contractCodeHash: keccak256(code) });

      const status = await chat(relays.trusted, home, ["--json", "status"], { env });
      expect(status.code, status.stderr).to.equal(0);
      expect(status.json.find((o) => o.type === "status")).to.include({
        chainId: "31337",
        contractAddress: trusted.address.toLowerCase(),
        contractSource: "CHAT_CONTRACT",
        contractCheck: "ok",
        user: "alice",
      });
      // Checked once per pin: no second "Pinned" note.
      expect(status.stderr).to.not.include("Pinned chain");
      const text = await chat(relays.trusted, home, ["status"], { contract: trusted.address });
      expect(text.code, text.stderr).to.equal(0);
      expect(text.stdout).to.include(`contract:  ${trusted.address.toLowerCase()} on chain 31337, from --contract (ok)`);

      // The same client pointed at the rival relay: the client's choice, not the relay, decides.
      const rivalStatus = await chat(relays.rival, home, ["--json", "status"], { contract: trusted.address });
      expect(rivalStatus.json.find((o) => o.type === "status")?.contractCheck).to.match(/^CHAIN_MISMATCH: /);
    });
  });
});
