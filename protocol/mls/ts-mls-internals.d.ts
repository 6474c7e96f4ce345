/**
 * The one internal of ts-mls 1.6.4 this project uses, reached through the package's own `./*.js`
 * export map: its application results carry no sender, so the sender's leaf is read from the sender
 * data (RFC 9420 §6.3.2) with the library's own decryption. Pinned version; re-check on upgrade.
 */
declare module "ts-mls/privateMessage.js" {
  import type { CiphersuiteImpl, PrivateMessage } from "ts-mls";
  export function decryptSenderData(
    msg: PrivateMessage,
    senderDataSecret: Uint8Array,
    cs: CiphersuiteImpl,
  ): Promise<{ leafIndex: number; generation: number; reuseGuard: Uint8Array } | undefined>;
}
