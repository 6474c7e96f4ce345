import { emptyPskIndex, joinGroup, type ClientConfig, type ClientState, type KeyPackage, type PrivateKeyPackage } from "ts-mls";
import { ChatError } from "../errors";
import { decodeMlsMessageBytes } from "./decode-mls-message";
import { mlsCipherSuite } from "./suite";

/**
 * Joins a group from a Welcome (RFC 9420 §12.4.3.1). The tree's leaves are checked with `joinConfig`
 * (the LENIENT policy: other members' leaves may predate their latest rotation); the returned state
 * carries `memberConfig` (STRICT) for everything processed afterwards.
 */
export async function joinFromWelcome(params: {
  welcome: Uint8Array;
  keyPackage: KeyPackage;
  privatePackage: PrivateKeyPackage;
  joinConfig: ClientConfig;
  memberConfig: ClientConfig;
}): Promise<ClientState> {
  const message = decodeMlsMessageBytes(params.welcome, "welcome");
  if (message.wireformat !== "mls_welcome") throw new ChatError("ENVELOPE_INVALID", "welcome is not a Welcome", { field: "welcome" });
  const cs = await mlsCipherSuite();
  let state: ClientState;
  try {
    state = await joinGroup(message.welcome, params.keyPackage, params.privatePackage, emptyPskIndex, cs, undefined, undefined, params.joinConfig);
  } catch (error) {
    throw new ChatError("ENVELOPE_INVALID", `welcome refused: ${(error as Error).message}`, { field: "welcome" });
  }
  return { ...state, clientConfig: params.memberConfig };
}
