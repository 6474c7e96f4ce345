/**
 * The relay's live hints about MLS groups, read off the WebSocket: a group's log grew, or a device of this
 * user has a new Welcome. They carry no MLS bytes and no sender, and the relay is not trusted: a hint only
 * says when to read the Delivery Service over HTTP (MlsDevice.catchUp / sync), which checks everything.
 */
import type { ServerFrame } from "../../protocol/wire";

/** Anything that hands out server frames, as RelayConnection.onFrame does; returns the unsubscribe. */
export interface FrameSource {
  onFrame(handler: (frame: ServerFrame) => void): () => void;
}

export interface GroupNotificationHandlers {
  /** The log of `groupId` (hex) has an entry at `seq` or later: read it after this device's cursor. */
  group(groupId: string, seq: number): void;
  /** A Welcome into `groupId` waits for one of this user's devices: sync to join. */
  welcome(groupId: string): void;
}

/** Calls `handlers` for each group and welcome frame from `source` until the returned function is called. */
export function onGroupNotifications(source: FrameSource, handlers: GroupNotificationHandlers): () => void {
  return source.onFrame((frame) => {
    if (frame.type === "group") handlers.group(frame.groupId, frame.seq);
    else if (frame.type === "welcome") handlers.welcome(frame.groupId);
  });
}
