import { buildModule } from "@nomicfoundation/hardhat-ignition/modules";

/**
 * Deploys ChatRegistry. The deployer becomes admin; `relayer` (the relay's ACCOUNT, which pays gas for
 * registrations and resets) is authorised at construction. Defaults to the deployer when not given:
 *   npx hardhat ignition deploy ignition/modules/ChatRegistry.ts --network localhost \
 *     --parameters '{"ChatRegistryModule":{"relayer":"0x..."}}'
 */
export default buildModule("ChatRegistryModule", (m) => {
  const relayer = m.getParameter("relayer", m.getAccount(0));
  const registry = m.contract("ChatRegistry", [relayer]);
  return { registry };
});
