/**
 * The logged-in user's MLS device in this home, built in one place for every command: the relay's Delivery
 * Service over the pinned TLS connection, credentials checked against key histories read from the client's
 * own chain endpoint, and the trusted deployment (chain id and contract) bound into every device credential.
 */
import type { RegistryReader } from "../chain";
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
  // Read when a credential is checked, not before: sending in an existing group needs no chain, and a
  // device must open while the chain is down (the deployment comes from the pin then).
  let registry: Promise<RegistryReader> | undefined;
  const reader = () =>
    (registry ??= ctx.registry().catch((error: unknown) => {
      registry = undefined;
      throw error;
    }));
  return MlsDevice.open({
    home: ctx.home,
    username: session.username,
    identityKeys: session.keys,
    chainId: deployment.chainId,
    contract: deployment.contractAddress,
    keyBook: chainKeyBook({
      keyCount: async (username) => (await reader()).keyCount(username),
      keyRecord: async (username, index) => (await reader()).keyRecord(username, index),
    }),
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
