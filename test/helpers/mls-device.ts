/**
 * MLS devices of test users made of the CLI's own client code (cli/mls): a Home per user, the user's key
 * history read from the chain by the client (chainKeyBook over a ChainReader, never the relay), and a
 * DsClient per device that counts the relay's answers and lets a test step in just before a commit or
 * a message is offered (to hold it, or to have its answer cut). No tests here.
 */
import { mkdirSync } from "node:fs";
import type { ChainReader } from "../../client-core/chain-reader";
import { Home } from "../../cli/home";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { DsClient, type DsAppendResult } from "../../cli/mls/ds-client";
import { MlsDevice, type MlsDeviceOptions } from "../../client-core/mls-device";
import type { RegistryDomain } from "../../protocol/eip712";
import { login } from "../relay/accounts-fixture";
import type { TestUser } from "./users";
import { homeDeviceStorage } from "../../cli/mls/device-files";
import type { SocketAppends } from "../../client-core/socket-appends";

/** What the relay answered one device's appends, as counts. */
export interface AppendCounts {
  stored: number;
  /** a retried id the relay had stored already (the first answer was lost) */
  duplicates: number;
  epochConflicts: number;
}

export class ObservedDsClient extends DsClient {
  readonly applications: AppendCounts = { stored: 0, duplicates: 0, epochConflicts: 0 };
  readonly commits: AppendCounts = { stored: 0, duplicates: 0, epochConflicts: 0 };
  /** Runs once, just before the next commit is offered (after the device saved it as pending). */
  beforeNextCommit?: () => Promise<void>;
  /** Runs before every application message is offered, with the relay's id of it and what is offered. */
  beforeApplication?: (relayId: string, offered: Parameters<DsClient["sendApplication"]>[1]) => Promise<void>;

  private static count(counts: AppendCounts, result: DsAppendResult): DsAppendResult {
    if (!result.accepted) counts.epochConflicts++;
    else if (result.duplicate) counts.duplicates++;
    else counts.stored++;
    return result;
  }

  override async commit(...args: Parameters<DsClient["commit"]>): Promise<DsAppendResult> {
    const hook = this.beforeNextCommit;
    this.beforeNextCommit = undefined;
    await hook?.();
    return ObservedDsClient.count(this.commits, await super.commit(...args));
  }

  override async sendApplication(...args: Parameters<DsClient["sendApplication"]>): Promise<DsAppendResult> {
    await this.beforeApplication?.(args[1].id, args[1]);
    return ObservedDsClient.count(this.applications, await super.sendApplication(...args));
  }
}

/** A registered user with a session token and the home folder its devices keep their state in. */
export interface DeviceOwner extends TestUser {
  token: string;
  home: string;
}

/** Logs a registered user in over the relay's HTTP API (plain HTTP: INSECURE_HTTP relays) and gives it a home. */
export async function loginDeviceOwner(params: { relayUrl: string; domain: RegistryDomain; user: TestUser; home: string }): Promise<DeviceOwner> {
  const session = await login(params.relayUrl, params.domain, params.user);
  if (session.status !== 200) throw new Error(`login ${params.user.username}: ${session.status} ${JSON.stringify(session.body)}`);
  mkdirSync(params.home, { recursive: true, mode: 0o700 });
  return { ...params.user, token: session.body.token, home: params.home };
}

/**
 * Opens `owner`'s device from its home (creating it on first use) as a new `chat` process would: its own
 * key book over the chain, a fresh DsClient to `relayUrl`, key packages topped up. With `socket` (wired to
 * the relay's WebSocket), small application messages go as append frames, as in `chat talk`.
 */
export async function openMlsDevice(params: {
  owner: DeviceOwner;
  relayUrl: string;
  chainId: bigint;
  contract: string;
  reader: ChainReader;
  deliver?: MlsDeviceOptions["deliver"];
  oneTimeKeyPackages?: number;
  socket?: SocketAppends;
}): Promise<{ device: MlsDevice; ds: ObservedDsClient }> {
  let ds: ObservedDsClient | undefined;
  const device = await MlsDevice.open({
    storage: homeDeviceStorage(new Home(params.owner.home), params.owner.username),
    username: params.owner.username,
    identityKeys: [{ index: 0, privateKey: params.owner.identity.privateKey }],
    chainId: params.chainId,
    contract: params.contract,
    keyBook: chainKeyBook(params.reader.registry(params.contract)),
    connect: (deviceId) => (ds = new ObservedDsClient({ url: params.relayUrl, token: params.owner.token, deviceId, socket: params.socket })),
    oneTimeKeyPackages: params.oneTimeKeyPackages ?? 3,
    deliver: params.deliver,
  });
  await device.ensureKeyPackages();
  return { device, ds: ds! };
}
