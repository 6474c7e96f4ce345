/**
 * The logged-in user's MLS device in this home, built in one place for every command: the relay's Delivery
 * Service over the pinned TLS connection, credentials checked against key histories read from the client's
 * own chain endpoint, and the trusted deployment (chain id and contract) bound into every device credential.
 */
import type { Context } from "../context";
import type { Session } from "../session";
import { chainKeyBook } from "./chain-key-book";
import { MlsDevice, type ReceivedMessage } from "./device";
import { DsClient } from "./ds-client";

export type SessionDeviceDeps = Pick<Context, "home" | "relay" | "deployment" | "registry">;

export async function openSessionDevice(
  ctx: SessionDeviceDeps,
  session: Session,
  deliver?: (messages: ReceivedMessage[]) => void | Promise<void>,
): Promise<MlsDevice> {
  const deployment = await ctx.deployment();
  const registry = await ctx.registry();
  return MlsDevice.open({
    home: ctx.home,
    username: session.username,
    identityKeys: session.keys,
    chainId: deployment.chainId,
    contract: deployment.contractAddress,
    keyBook: chainKeyBook(registry),
    connect: (deviceId) =>
      new DsClient({
        url: ctx.relay.origin,
        token: session.token,
        deviceId,
        tls: () => ctx.relay.tls(),
        connectionError: (error) => ctx.relay.connectionError(error),
      }),
    deliver,
  });
}
