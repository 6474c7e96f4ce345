// web/src/messenger-types.ts  (you create this file exactly; the coordinator implements it in web/src/messenger.ts)
export type DeliveryState = "sending" | "stored" | "delivered" | "failed";
export interface ConversationSummary { id: string; kind: "direct" | "group"; title: string; members: string[]; unread: number; lastActivity: number }
export type TimelineItem =
  | { type: "message"; id: string; from: string; fromMe: boolean; body: string; sentAt: number; state?: DeliveryState }
  | { type: "event"; id: string; at: number; text: string; level: "info" | "warning" | "alarm";
      keyChange?: { username: string; kind: "rotation" | "reset"; safetyNumber: string; verified: boolean } };
export interface Messenger {
  conversations(): ConversationSummary[];
  timeline(conversationId: string): TimelineItem[];
  openDirect(peer: string): Promise<string>;            // conversation id
  createGroup(name: string, members: string[]): Promise<string>;
  addMembers(conversationId: string, usernames: string[]): Promise<void>;
  removeMember(conversationId: string, username: string): Promise<void>;
  send(conversationId: string, body: string): Promise<void>;
  markRead(conversationId: string): void;
  verify(username: string): Promise<void>;
  /** called whenever conversations or timelines change (live messages, delivery states, events) */
  subscribe(listener: () => void): () => void;
  close(): Promise<void>;
}
