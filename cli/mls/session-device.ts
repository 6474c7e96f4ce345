/**
 * The logged-in user's MLS device in this home, built in one place for every command: the relay's Delivery
 * Service over the pinned TLS connection, credentials checked against key histories read from the client's
 * own chain endpoint, and the trusted deployment (chain id and contract) bound into every device credential.
 * A linked device (no identity key) is opened with its session's device secret, and follows its user's key
 * rotations here: it logs in again with its own key and adopts the credential another device signed for it.
 */
import type { RegistryReader } from "../../client-core/chain-reader";
import { isChatError } from "../../protocol/errors";
import { loginWithDevice } from "../auth";
import type { Context } from "../context";
import type { Session } from "../session";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { MlsDevice, type ReceivedMessage } from "../../client-core/mls-device";
import type { SocketAppends } from "../../client-core/socket-appends";
import { DsClient } from "./ds-client";
import { homeDeviceStorage } from "./device-files";

export type SessionDeviceDeps = Pick<Context, "home" | "relay" | "deployment" | "registry" | "sessions">;

const unhex = (text: string) => new Uint8Array(Buffer.from(text, "hex"));

export async function openSessionDevice(
  ctx: SessionDeviceDeps,
  session: Session,
  deliver?: (messages: ReceivedMessage[]) => void | Promise<void>,
  /** the relay's WebSocket, when the command holds one */
  socket?: SocketAppends,
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
  const device = await MlsDevice.open({
    storage: homeDeviceStorage(ctx.home, session.username),
    username: session.username,
    identityKeys: session.keys,
    ...(session.linked ? { deviceSecret: unhex(session.linked.deviceSecret) } : {}),
    chainId: deployment.chainId,
    contract: deployment.contractAddress,
    keyBook: chainKeyBook({
      keyCount: async (username) => (await reader()).keyCount(username),
      keyRecord: async (username, index) => (await reader()).keyRecord(username, index),
    }),
    connect: (deviceId) =>
      new DsClient({
        url: ctx.relay.origin,
        // read at each request: a linked device's login below renews the token of this same session
        token: () => session.token,
        deviceId,
        tls: () => ctx.relay.tls(),
        connectionError: (error) => ctx.relay.connectionError(error),
        socket,
      }),
    deliver,
  });
  if (session.linked) {
    await followLinkedCredential(ctx, session, device).catch((error: unknown) => {
      // Without the chain the key change cannot be seen; the device goes on with what it has.
      if (!isChatError(error) || error.code !== "CHAIN_UNAVAILABLE") throw error;
    });
  }
  return device;
}

/**
 * A linked device whose user's key changed on chain since its credential or session: the old session stands
 * only briefly after a rotation, so it logs in again with its own Ed25519 key; the relay answers with the
 * newest credential on file (signed by the new key when a device holding it re-authorised this one), which
 * the device checks against the chain and adopts. `session` is updated in place for the rest of the command.
 */
async function followLinkedCredential(ctx: SessionDeviceDeps, session: Session, device: MlsDevice): Promise<void> {
  const registry = await ctx.registry();
  const current = await registry.currentKey(session.username);
  if (current.index === device.keyIndex && current.index === session.keyIndex) return;
  const { session: fresh, credential } = await loginWithDevice({
    ctx,
    username: session.username,
    deviceId: device.deviceId,
    credential: device.credentialIdentity,
    deviceSecret: unhex(session.linked!.deviceSecret),
    sign: (text) => device.signText(text),
  });
  Object.assign(session, fresh);
  await device.adoptCredential(credential);
}
