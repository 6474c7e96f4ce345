/**
 * The messaging engine of the browser client: MLS over the relay's Delivery Service, built on client-core's
 * device engine. THIS FILE IS A PLACEHOLDER, to be replaced by the real engine; it keeps the app building
 * and its main screen showing that messaging is not available.
 *
 * The contract the rest of web/src relies on:
 *
 *   openMessenger(session: Session): Promise<Messenger>
 *     `session` (account.ts) carries everything account.ts has after a login:
 *       username, token (Bearer, also for the WebSocket subprotocol "bearer.<token>"), expiresAt, keyIndex,
 *       relayOrigin (the page's own origin), chainId, contract (lowercase 0x hex),
 *       registry: RegistryReader on the user's OWN RPC (every credential / key check goes there),
 *       identityKeys: UnlockedKey[] {index, privateKey}, current first (empty for a linked browser),
 *       linked?: { deviceId, deviceSecret (opens the device's MLS state), credential (newest, from the relay) }.
 *     It rejects with a ChatError whose code and message the main screen shows; it must not throw otherwise.
 *
 *   accountHooks: AccountHooks (account.ts), the MLS half of the account flows:
 *     afterRotation(session)  re-authorise this browser's MLS device with the new key (MlsDevice.reauthorize);
 *                             a failure is shown as a warning, the rotation being done on chain already.
 *     createLinked(parts)     after a link approval: create the linked device's MLS state (MlsDevice.createLinked)
 *                             from { deviceId, deviceSecret, signatureKey, credential, keyIndex, chainId, contract, registry }.
 *     openLinked(params)      at a linked browser's login: open its MLS state with the device secret and
 *                             return { signText } (Ed25519 over the device login text, as MlsDevice.signText).
 */
import { ChatError } from "../../protocol/errors";
import type { AccountHooks, Session } from "./account";
import type { Messenger } from "./messenger-types";

export const accountHooks: AccountHooks = {};

export async function openMessenger(session: Session): Promise<Messenger> {
  throw new ChatError("INTERNAL", `messaging is not built into this page yet (logged in as ${session.username})`);
}
