/**
 * Pinned keys of peers, and which key the person verified (chat verify), per local user.
 * On disk: users/<me>/contacts.json.
 */
import type { KeyKindName } from "../../protocol/eip712";
import type { Home } from "../home";

export interface ContactPin {
  keys: { index: number; publicKey: string; kind: KeyKindName; timestamp: number }[];
  verified?: { index: number; publicKey: string; at: number };
}

export interface ContactStore {
  get(me: string, peer: string): ContactPin | undefined;
  put(me: string, peer: string, pin: ContactPin): void;
}

type Contacts = Record<string, ContactPin>;

export class FileContactStore implements ContactStore {
  constructor(private readonly home: Home) {}
  private file(me: string): string {
    return `${this.home.userDir(me)}/contacts.json`;
  }
  private all(me: string): Contacts {
    return this.home.readJson<Contacts>(this.file(me)) ?? {};
  }
  get(me: string, peer: string): ContactPin | undefined {
    return this.all(me)[peer];
  }
  put(me: string, peer: string, pin: ContactPin): void {
    const contacts = this.all(me);
    contacts[peer] = pin;
    this.home.writeJson(this.file(me), contacts);
  }
}

export class MemoryContactStore implements ContactStore {
  private readonly pins = new Map<string, ContactPin>();
  get(me: string, peer: string): ContactPin | undefined {
    const pin = this.pins.get(`${me}/${peer}`);
    return pin && structuredClone(pin);
  }
  put(me: string, peer: string, pin: ContactPin): void {
    this.pins.set(`${me}/${peer}`, structuredClone(pin));
  }
}
