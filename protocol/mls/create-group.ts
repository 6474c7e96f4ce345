import { createGroup, type ClientConfig, type ClientState, type KeyPackage, type PrivateKeyPackage } from "ts-mls";
import { randomBytes } from "./bytes";
import { mlsCipherSuite } from "./suite";

export const GROUP_ID_BYTES = 32;

/**
 * A new group with only this device in it, at epoch 0 (RFC 9420 §11). The id is random, so it says
 * nothing about who is in the group or what it is called (§8.1 only asks it to be unique).
 */
export async function createMlsGroup(params: {
  keyPackage: KeyPackage;
  privatePackage: PrivateKeyPackage;
  clientConfig: ClientConfig;
}): Promise<ClientState> {
  const cs = await mlsCipherSuite();
  return createGroup(randomBytes(GROUP_ID_BYTES), params.keyPackage, params.privatePackage, [], cs, params.clientConfig);
}
