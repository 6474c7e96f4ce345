/**
 * What the client pinned per relay origin: the TLS certificate (trust on first use) and the deployment
 * (chain id, contract, frame limit) the relay announced and the client checked. On disk: relays.json.
 */
import type { Home } from "../home";

export interface RelayPin {
  /** SHA-256 of the DER certificate, uppercase hex with colons, as Node's fingerprint256 */
  certSha256?: string;
  certPem?: string;
  chainId?: string;
  contractAddress?: string;
  /** keccak256 of the contract's runtime code, set once it was checked against the compiled ChatRegistry */
  contractCodeHash?: string;
  maxFrameBytes?: number;
  pinnedAt?: number;
}

export type RelayPins = Record<string, RelayPin>;

export interface RelayPinStore {
  get(origin: string): RelayPin | undefined;
  /** Merges `update` into the pin of `origin` and returns the result. */
  update(origin: string, update: Partial<RelayPin>): RelayPin;
}

export class FileRelayPinStore implements RelayPinStore {
  private readonly file: string;
  constructor(private readonly home: Home) {
    this.file = home.path("relays.json");
  }
  private all(): RelayPins {
    return this.home.readJson<RelayPins>(this.file) ?? {};
  }
  get(origin: string): RelayPin | undefined {
    return this.all()[origin];
  }
  update(origin: string, update: Partial<RelayPin>): RelayPin {
    const pins = this.all();
    pins[origin] = { ...pins[origin], ...update };
    this.home.writeJson(this.file, pins);
    return pins[origin];
  }
}

export class MemoryRelayPinStore implements RelayPinStore {
  private readonly pins = new Map<string, RelayPin>();
  get(origin: string): RelayPin | undefined {
    const pin = this.pins.get(origin);
    return pin && { ...pin };
  }
  update(origin: string, update: Partial<RelayPin>): RelayPin {
    const pin = { ...this.pins.get(origin), ...update };
    this.pins.set(origin, pin);
    return { ...pin };
  }
}
