import { ChainReader } from "../../client-core/chain-reader";
import { ChatError } from "../../protocol/errors";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { freePort } from "../helpers/ports";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { expect } from "../helpers/chai";

const rejection = async (work: Promise<unknown>): Promise<ChatError> => expect(work).to.be.rejectedWith(ChatError);

describe("cli/chain: the client's chain reads", function () {
  this.timeout(60_000);
  let anvil: AnvilNode;
  let deployed: DeployedRegistry;
  let reader: ChainReader;

  before(async () => {
    anvil = await startAnvil();
    deployed = await deployRegistry({ rpcUrl: anvil.url });
    reader = await ChainReader.connect(anvil.url);
  });
  after(async () => {
    reader?.close();
    await anvil?.stop();
  });

  it("reads the chain id and checks the deployment", async () => {
    expect(reader.chainId).to.equal(deployed.chainId);
    expect(await reader.hasCode(deployed.address)).to.equal(true);
    expect(await reader.registry(deployed.address).isRegistered("nobody_here")).to.equal(false);
    expect(await reader.registry(deployed.address).keyHistory("nobody_here")).to.deep.equal([]);
  });

  it("reports the contract's decoded error, not CHAIN_UNAVAILABLE, when a read reverts", async () => {
    const registry = reader.registry(deployed.address);
    const unknown = await rejection(registry.currentKey("nobody_here"));
    expect(unknown.code).to.equal("UNKNOWN_USER");
    expect(unknown.message).to.equal("no user named nobody_here");
    const outOfRange = await rejection(registry.keyRecord("nobody_here", 0));
    expect(outOfRange.code).to.equal("NOT_FOUND");
    expect(outOfRange.details).to.deep.equal({ contractError: "ChatRegistryKeyIndexOutOfRange" });
  });

  it("still reports CHAIN_UNAVAILABLE, naming the URL, when the node cannot be reached", async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const error = await rejection(ChainReader.connect(dead));
    expect(error.code).to.equal("CHAIN_UNAVAILABLE");
    expect(error.message).to.include(dead);
    // A node that goes away after connecting: the read fails as unavailable, with no contract error.
    const node = await startAnvil();
    const late = await ChainReader.connect(node.url);
    await node.stop();
    try {
      const failed = await rejection(late.registry(deployed.address).currentKey("nobody_here"));
      expect(failed.code).to.equal("CHAIN_UNAVAILABLE");
      expect(failed.message).to.include(node.url);
    } finally {
      late.close();
    }
  });
});
