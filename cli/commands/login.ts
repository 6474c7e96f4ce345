import { loginWithKeys, unlockCurrentKeys, type LoginDeps, type UnlockDeps } from "../auth";
import type { Context } from "../context";
import { parseUsername } from "../errors";
import { localTime } from "../messaging";
import { checkOwnAccount, type OwnAccountDeps } from "../own-account";
import { publishDevice, type MlsChatDeps } from "../mls/chat";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { MlsDevice } from "../../client-core/mls-device";
import { DsClient } from "../mls/ds-client";
import { loginWithDevice } from "../auth";
import { homeDeviceStorage, homeDeviceStore, homeHasLinkedDevice } from "../mls/device-files";

export type LoginCommandDeps = LoginDeps & UnlockDeps & OwnAccountDeps & MlsChatDeps & Pick<Context, "passwords" | "credential">;

/** chat login USER */
export async function login(ctx: LoginCommandDeps, rawUsername: string): Promise<void> {
  const username = parseUsername(rawUsername);
  await ctx.deployment();
  // Before the password: a pending reset of this account is news the owner needs first.
  await checkOwnAccount(ctx, username);
  if (homeHasLinkedDevice(ctx.home, username)) return loginLinked(ctx, username);
  const password = await ctx.passwords.password(`Password for ${username}: `);
  const keys = await unlockCurrentKeys(ctx, username, password);
  const credential = await ctx.credential(username, password);
  const session = await loginWithKeys({ ctx, username, credential, keys });
  await publishDevice(ctx, session);
  ctx.out.data(
    { type: "login", username, keyIndex: session.keyIndex, expiresAt: session.expiresAt },
    `Logged in as ${username} until ${localTime(session.expiresAt)}`,
  );
}

/**
 * A linked device (chat device link made it; it holds no identity key): the password opens its device secret,
 * which opens its MLS state; it logs in with its own Ed25519 key and takes the newest credential the relay has
 * for it (re-signed after a rotation by a device holding the key), then keeps its key packages published.
 */
async function loginLinked(ctx: LoginCommandDeps, username: string): Promise<void> {
  const password = await ctx.passwords.password(`Password for ${username}: `);
  const deviceSecret = await ctx.out.progress("unlocking this device (scrypt)", homeDeviceStore(ctx.home, username).readDeviceSecret(password));
  const deployment = await ctx.deployment();
  let token = "";
  const device = await MlsDevice.open({
    storage: homeDeviceStorage(ctx.home, username),
    username,
    identityKeys: [],
    deviceSecret,
    chainId: deployment.chainId,
    contract: deployment.contractAddress,
    keyBook: chainKeyBook(await ctx.registry()),
    connect: (deviceId) => new DsClient({ url: ctx.relay.origin, token: () => token, deviceId, tls: () => ctx.relay.tls(), connectionError: (error) => ctx.relay.connectionError(error) }),
  });
  const { session, credential } = await loginWithDevice({ ctx, username, deviceId: device.deviceId, credential: device.credentialIdentity, deviceSecret, sign: (text) => device.signText(text) });
  token = session.token;
  await device.adoptCredential(credential);
  await device.ensureKeyPackages();
  ctx.out.data(
    { type: "login", username, keyIndex: session.keyIndex, expiresAt: session.expiresAt, deviceId: device.deviceId },
    `Logged in as ${username} (linked device ${device.deviceId}) until ${localTime(session.expiresAt)}`,
  );
}
