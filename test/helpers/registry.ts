import { NonceManager, Wallet } from "ethers";
import { connectRpc } from "../../chain/rpc";
import { ChatRegistry__factory } from "../../typechain-types";
import { anvilPrivateKey } from "./anvil";

export interface DeployedRegistry {
  address: string;
  deployBlock: number;
  chainId: bigint;
  /** anvil account 0: the admin that deployed. */
  deployerKey: string;
  /** anvil account 1 unless given: holds the relayer role. */
  relayerKey: string;
}

/** Deploys ChatRegistry from the compiled artifact onto a real node (anvil) over JSON-RPC. */
export async function deployRegistry(params: { rpcUrl: string; relayerKey?: string }): Promise<DeployedRegistry> {
  const { chainId, provider } = await connectRpc(params.rpcUrl);
  try {
    const deployerKey = anvilPrivateKey(0);
    const relayerKey = params.relayerKey ?? anvilPrivateKey(1);
    const deployer = new NonceManager(new Wallet(deployerKey, provider));
    const factory = new ChatRegistry__factory(deployer);
    const contract = await factory.deploy(new Wallet(relayerKey).address, 60); // reset delay (s): tests move the chain clock past it
    const receipt = await contract.deploymentTransaction()!.wait();
    return {
      address: await contract.getAddress(),
      deployBlock: receipt!.blockNumber,
      chainId,
      deployerKey,
      relayerKey,
    };
  } finally {
    provider.destroy();
  }
}
