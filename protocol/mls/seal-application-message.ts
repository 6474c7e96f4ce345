import { createApplicationMessage, encodeMlsMessage, zeroOutUint8Array, type ClientState } from "ts-mls";
import { encodeApplicationPayload, type ApplicationPayload } from "./application-payload";
import { mlsCipherSuite } from "./suite";

/**
 * Encrypts one application payload for the group as an MLS PrivateMessage (RFC 9420 §6.3). The returned
 * state replaces `state` at once: the message key is used up whether or not the message is delivered.
 */
export async function sealApplicationMessage(params: {
  state: ClientState;
  payload: ApplicationPayload;
}): Promise<{ state: ClientState; message: Uint8Array }> {
  const cs = await mlsCipherSuite();
  const result = await createApplicationMessage(params.state, encodeApplicationPayload(params.payload), cs);
  const message = encodeMlsMessage({ version: "mls10", wireformat: "mls_private_message", privateMessage: result.privateMessage });
  // The used generation's key and nonce: erasing them is the per-message forward secrecy of §9.2.
  for (const secret of result.consumed) zeroOutUint8Array(secret);
  return { state: result.newState, message };
}
