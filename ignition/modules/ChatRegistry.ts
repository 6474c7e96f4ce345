import { buildModule } from "@nomicfoundation/hardhat-ignition/modules";

/**
 * Deploys ChatRegistry. The deployer becomes admin; `relayer` (the relay's ACCOUNT, which pays gas for
 * registrations and resets) is authorised at construction. Defaults to the deployer when not given.
 * `resetDelay` is the seconds a password reset waits before it can take effect, during which the user's
 * current key can cancel it: 1 second to 30 days; on a public chain 24 to 72 hours. It defaults to 24 hours so
 * that a deployment which forgets it is still safe:
 *   npx hardhat ignition deploy ignition/modules/ChatRegistry.ts --network localhost \
 *     --parameters '{"ChatRegistryModule":{"relayer":"0x...","resetDelay":172800}}'
 */
export default buildModule("ChatRegistryModule", (m) => {
  const relayer = m.getParameter("relayer", m.getAccount(0));
  const resetDelay = m.getParameter("resetDelay", 86_400);
  const registry = m.contract("ChatRegistry", [relayer, resetDelay]);
  return { registry };
});
