import type { JsonRpcProvider } from "ethers";
import { createRpcProvider } from "../../chain/rpc";
import { registryDomain, type RegistryDomain } from "../../protocol/eip712";
import { ChatRegistry__factory, type ChatRegistry } from "../../typechain-types";
import { startAnvil, type AnvilNode } from "./anvil";
import { deployRegistry, type DeployedRegistry } from "./registry";

/** A real anvil with a freshly deployed ChatRegistry, and what tests need to talk to it and sign for it. */
export interface ChainFixture {
  anvil: AnvilNode;
  deployed: DeployedRegistry;
  provider: JsonRpcProvider;
  registry: ChatRegistry;
  domain: RegistryDomain;
  close(): Promise<void>;
}

export async function startChain(options: { blockTime?: number } = {}): Promise<ChainFixture> {
  const anvil = await startAnvil(options);
  const deployed = await deployRegistry({ rpcUrl: anvil.url });
  const provider = createRpcProvider(anvil.url, deployed.chainId, { pollingIntervalMs: 100 });
  const registry = ChatRegistry__factory.connect(deployed.address, provider);
  return {
    anvil,
    deployed,
    provider,
    registry,
    domain: registryDomain({ chainId: deployed.chainId, verifyingContract: deployed.address }),
    close: async () => {
      provider.destroy();
      await anvil.stop();
    },
  };
}
