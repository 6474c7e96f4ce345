import { decodeMlsMessage, type MLSMessage } from "ts-mls";
import { ChatError } from "../errors";

/** Largest MLS message accepted from the wire; a Welcome for 100 members is about 40 KB. */
export const MAX_MLS_MESSAGE_BYTES = 1 << 20;

/** Decodes one MLSMessage (RFC 9420 §6), refusing oversize input, garbage and trailing bytes. */
export function decodeMlsMessageBytes(bytes: Uint8Array, field = "message"): MLSMessage {
  if (!(bytes instanceof Uint8Array)) throw new ChatError("BAD_REQUEST", `${field} must be bytes`, { field });
  if (bytes.length > MAX_MLS_MESSAGE_BYTES) throw new ChatError("FRAME_TOO_LARGE", `${field} is too large`, { field });
  let decoded: [MLSMessage, number] | undefined;
  try {
    decoded = decodeMlsMessage(bytes, 0);
  } catch {
    decoded = undefined;
  }
  if (!decoded || decoded[1] !== bytes.length) throw new ChatError("ENVELOPE_INVALID", `${field} is not one MLS message`, { field });
  return decoded[0];
}
