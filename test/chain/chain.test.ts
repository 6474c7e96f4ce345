import { Wallet, ZeroAddress, ZeroHash, type ErrorFragment, type ParamType } from "ethers";
import { decodeRegistryRevert, registryRevertError } from "../../chain/errors";
import { connectRegistry, registryErrorInterface, registryInterface } from "../../chain/registry";
import { ChatRegistry__factory, ECDSA__factory } from "../../typechain-types";
import { createRpcProvider, fetchChainId, hasContractCode } from "../../chain/rpc";
import { ChatError } from "../../protocol/errors";
import { anvilPrivateKey, startAnvil, type AnvilNode } from "../helpers/anvil";
import { freePort } from "../helpers/ports";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { expect } from "../helpers/chai";

/** A valid value of an ABI parameter type, enough to encode an error's arguments. */
function sampleOf(param: ParamType): unknown {
  if (param.baseType.startsWith("uint") || param.baseType.startsWith("int")) return 7n;
  if (param.baseType === "address") return ZeroAddress;
  if (param.baseType === "bytes32") return ZeroHash;
  if (param.baseType === "bytes") return "0x1234";
  if (param.baseType === "string") return "bob";
  if (param.baseType === "bool") return true;
  throw new Error(`no sample for ${param.type}`);
}

describe("chain/errors: registry revert decoding", () => {
  it("decodes every custom error the contract declares into its own stable code, not the fallback", () => {
    const fragments: ErrorFragment[] = [];
    registryErrorInterface.forEachError((fragment) => fragments.push(fragment));
    expect(fragments.length).to.be.greaterThan(10);
    for (const fragment of fragments) {
      const data = registryErrorInterface.encodeErrorResult(fragment, fragment.inputs.map(sampleOf));
      const decoded = decodeRegistryRevert({ info: { error: { data } } });
      expect(decoded, fragment.name).to.not.equal(null);
      expect(decoded!.name).to.equal(fragment.name);
      expect(decoded!.args).to.have.length(fragment.inputs.length);
      expect(decoded!.message, fragment.name).to.not.match(/contract rejected the call/);
    }
    expect(decodeRegistryRevert(registryErrorInterface.encodeErrorResult("ChatRegistryUsernameTaken", ["alice"]))).to.deep.include({
      code: "USERNAME_TAKEN",
      name: "ChatRegistryUsernameTaken",
      message: "username alice is already registered",
    });
  });

  it("knows every error of the compiled contract and of the ECDSA library, and every event, from ABIs without bytecode", () => {
    const names = (abi: readonly { type: string; name?: string }[], type: string) => abi.filter((f) => f.type === type).map((f) => f.name!).sort();
    const known: string[] = [];
    registryErrorInterface.forEachError((fragment) => known.push(fragment.name));
    expect(known.sort()).to.deep.equal([...new Set([...names(ChatRegistry__factory.abi, "error"), ...names(ECDSA__factory.abi, "error")])].sort());
    const events: string[] = [];
    registryInterface.forEachEvent((fragment) => events.push(fragment.name));
    const ownEvents = names(ChatRegistry__factory.abi, "event").filter((name) => !/^(Role|EIP712Domain)/.test(name));
    expect(events.sort()).to.deep.equal(ownEvents);
  });

  it("returns null for no revert data, unknown selectors and plain failures", () => {
    expect(decodeRegistryRevert(new Error("socket hang up"))).to.equal(null);
    expect(decodeRegistryRevert({ data: "0xdeadbeef" })).to.equal(null);
    expect(decodeRegistryRevert({ data: "0x" })).to.equal(null);
    expect(registryRevertError(undefined)).to.equal(null);
  });
});

describe("chain/: against a real node (anvil)", function () {
  this.timeout(60_000);
  let anvil: AnvilNode;
  let deployed: DeployedRegistry;

  before(async () => {
    anvil = await startAnvil();
    deployed = await deployRegistry({ rpcUrl: anvil.url });
  });
  after(async () => anvil?.stop());

  it("decodes the revert of a real eth_call made through the typed registry", async () => {
    const provider = createRpcProvider(anvil.url, deployed.chainId);
    try {
      const registry = connectRegistry(deployed.address, provider);
      const failure = await expect(registry.currentKey("nobody_here")).to.be.rejected;
      const decoded = registryRevertError(failure);
      expect(decoded).to.be.instanceOf(ChatError);
      expect(decoded!.code).to.equal("UNKNOWN_USER");
      expect(decoded!.details).to.deep.equal({ contractError: "ChatRegistryUnknownUser" });
    } finally {
      provider.destroy();
    }
  });

  it("fetches the chain id, and fails fast with CHAIN_UNAVAILABLE naming the endpoint as told", async () => {
    expect(await fetchChainId(anvil.url)).to.equal(31337n);
    const dead = `http://127.0.0.1:${await freePort()}`;
    const error = await fetchChainId(dead, { endpointName: "RPC_URL", timeoutMs: 2000 }).catch((e: unknown) => e);
    expect(error).to.be.instanceOf(ChatError);
    expect((error as ChatError).code).to.equal("CHAIN_UNAVAILABLE");
    expect((error as ChatError).message).to.match(/^chain unreachable at RPC_URL /);
    expect((error as ChatError).message).to.not.include(dead);
  });

  it("checks the deployment: code at the registry's address, none elsewhere", async () => {
    const provider = createRpcProvider(anvil.url, deployed.chainId);
    try {
      expect(await hasContractCode(provider, deployed.address)).to.equal(true);
      expect(await hasContractCode(provider, Wallet.createRandom().address)).to.equal(false);
    } finally {
      provider.destroy();
    }
  });

  it("a provider's re-read transaction count is the node's current answer, not a cached one", async () => {
    const provider = createRpcProvider(anvil.url, deployed.chainId);
    try {
      const wallet = new Wallet(anvilPrivateKey(5), provider);
      const before = await provider.getTransactionCount(wallet.address);
      // Broadcast without ethers' own waiting, so the re-read follows within ethers' 250 ms cache window.
      const signed = await wallet.signTransaction({
        to: wallet.address,
        value: 1n,
        nonce: before,
        gasLimit: 21_000n,
        gasPrice: 10n ** 10n,
        chainId: deployed.chainId,
      });
      await provider.send("eth_sendRawTransaction", [signed]);
      expect(await provider.getTransactionCount(wallet.address)).to.equal(before + 1);
    } finally {
      provider.destroy();
    }
  });
});
