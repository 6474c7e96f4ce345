/**
 * The messages-v2 (MLS) burst of the reliability tests, made of the CLI's client code in-process (no tests
 * here): participants with an outbox of unaccepted messages and a history that drops a payload id seen
 * before, a burst driver, a relay kill timed to catch two members in the middle of a commit, and the
 * counts the tests assert (what each person was shown, and what each group's log on the relay holds).
 */
import net from "node:net";
import { Home } from "../../cli/home";
import type { GroupFile } from "../../client-core/device-store";
import type { GroupEvent, MlsDevice, ReceivedMessage } from "../../client-core/mls-device";
import { isChatError } from "../../protocol/errors";
import { newPayloadId } from "../../protocol/mls";
import type { EarlyFrame } from "../../protocol/wire";
import { V2_LIMITS } from "../../protocol/wire-v2";
import type { DeviceOwner, ObservedDsClient } from "./mls-device";
import { freePort } from "./ports";
import { waitFor } from "./wait";
import { homeDeviceStore } from "../../cli/mls/device-files";

/** One message as its sender's outbox keeps it: the same id and time on every attempt. */
export interface OutgoingMessage {
  id: string;
  sentAt: number;
  body: string;
  groupId: string;
  from: string;
}

export interface Conversation {
  groupId: string;
  /** usernames */
  members: string[];
}

/** A failure that says only that the relay could not be reached: the client keeps the work and retries. */
const unreachable = (error: unknown) => isChatError(error) && error.code === "RELAY_UNREACHABLE";

export class MlsParticipant {
  device!: MlsDevice;
  ds!: ObservedDsClient;
  /** written but not accepted by the relay, in order; kept across restarts as the CLI's outbox is */
  readonly outbox: OutgoingMessage[] = [];
  /** payload ids already shown: the history drops a message it has seen */
  readonly seen = new Set<string>();
  /** what the person was shown (after the history's check) */
  readonly shown: ReceivedMessage[] = [];
  /** messages handed over again after they were shown, and dropped by the history */
  redelivered = 0;
  /** the payload ids of those */
  readonly redeliveredIds = new Set<string>();
  /** operations that failed because the relay was unreachable (retried later) */
  unreachable = 0;
  /** messages shown from early frames (before their log entries), and early frames the device dropped */
  earlyApplied = 0;
  earlyDropped = 0;
  /** failures of applying an early frame (there should be none: what cannot be applied is dropped) */
  readonly earlyErrors: unknown[] = [];
  /** log entries the device refused while syncing */
  readonly refused: GroupEvent[] = [];
  /** told of each message the relay accepts, whoever flushed the outbox */
  onAccepted?: (message: OutgoingMessage) => void;
  private lock: Promise<unknown> = Promise.resolve();

  constructor(
    readonly owner: DeviceOwner,
    private readonly opener: (deliver: (messages: ReceivedMessage[]) => void) => Promise<{ device: MlsDevice; ds: ObservedDsClient }>,
  ) {}

  get username(): string {
    return this.owner.username;
  }

  /** Opens the device from its home, as a new `chat` process would (the first call creates it). */
  async open(): Promise<void> {
    const opened = await this.opener((messages) => this.deliver(messages));
    this.device = opened.device;
    this.ds = opened.ds;
  }

  private deliver(messages: ReceivedMessage[]): void {
    for (const message of messages) {
      if (this.seen.has(message.id)) {
        this.redelivered++;
        this.redeliveredIds.add(message.id);
        continue;
      }
      this.seen.add(message.id);
      this.shown.push(message);
    }
  }

  /** One operation on the device at a time (the device's files are not safe for concurrent use), in call order. */
  exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.lock.then(task, task);
    this.lock = run.catch(() => undefined);
    return run;
  }

  /** Runs `task`; an unreachable relay is counted and answered false, any other failure is thrown. */
  private async tolerant(task: () => Promise<unknown>): Promise<boolean> {
    try {
      await task();
      return true;
    } catch (error) {
      if (!unreachable(error)) throw error;
      this.unreachable++;
      return false;
    }
  }

  /** Sends the outbox in order, each with its first id and time; stops at the first message the relay did not take. */
  flushOutbox(): Promise<OutgoingMessage[]> {
    return this.exclusive(async () => {
      const accepted: OutgoingMessage[] = [];
      while (this.outbox.length > 0) {
        const message = this.outbox[0];
        if (!(await this.tolerant(() => this.device.send(message.groupId, message.body, { id: message.id, sentAt: message.sentAt })))) break;
        this.outbox.shift();
        accepted.push(message);
        this.onAccepted?.(message);
      }
      return accepted;
    });
  }

  sync(): Promise<boolean> {
    return this.exclusive(() =>
      this.tolerant(async () => {
        const { events } = await this.device.sync();
        this.refused.push(...events.filter((e) => e.kind === "refused"));
      }),
    );
  }

  /**
   * Applies an early frame from this user's socket as `chat talk` does: at once, ordered only by the
   * device's own lock, not behind the participant's other work.
   */
  applyEarly(frame: EarlyFrame): void {
    // A frame that comes before the first opening has no device to go to; none of its groups exist yet.
    if (!this.device) return;
    this.device.applyEarly(frame.groupId, frame.entry).then(
      ({ messages }) => (messages.length > 0 ? (this.earlyApplied += messages.length) : this.earlyDropped++),
      (error) => this.earlyErrors.push(error),
    );
  }

  updateKeys(groupId: string): Promise<boolean> {
    return this.exclusive(() => this.tolerant(() => this.device.updateKeys(groupId)));
  }

  /** The group as this device saved it (cursor, pending commit), read from its home. */
  groupFile(groupId: string): GroupFile | undefined {
    return homeDeviceStore(new Home(this.owner.home), this.username).readGroup(groupId);
  }
}

/** One-to-one chats between participants 2i and 2i+1 and one group of `groupOf`, all joined. */
export async function startConversations(participants: MlsParticipant[], groupOf: MlsParticipant[]): Promise<{ pairs: Conversation[]; group: Conversation }> {
  const pairs: Conversation[] = [];
  for (let i = 0; i + 1 < participants.length; i += 2) {
    const [a, b] = [participants[i], participants[i + 1]];
    pairs.push({ groupId: await a.device.startDirect(b.username), members: [a.username, b.username] });
  }
  const [creator, ...others] = groupOf;
  const group = { groupId: await creator.device.createGroup(others.map((p) => p.username)), members: groupOf.map((p) => p.username) };
  for (const p of participants) await p.device.sync();
  for (const conversation of [...pairs, group]) {
    for (const username of conversation.members) {
      const p = participants.find((x) => x.username === username)!;
      if (!p.device.groups().some((g) => g.groupId === conversation.groupId)) throw new Error(`${username} did not join ${conversation.groupId}`);
    }
  }
  return { pairs, group };
}

/** Each sender's messages, its conversations interleaved: `count(conversation)` from every member of each. */
export function planMessages(conversations: Conversation[], count: (conversation: Conversation) => number): Map<string, { groupId: string; body: string }[]> {
  const plan = new Map<string, { groupId: string; body: string }[]>();
  const bySender = new Map<string, Conversation[]>();
  for (const c of conversations) for (const m of c.members) bySender.set(m, [...(bySender.get(m) ?? []), c]);
  for (const [sender, mine] of bySender) {
    const list: { groupId: string; body: string }[] = [];
    const longest = Math.max(...mine.map(count));
    for (let n = 0; n < longest; n++) {
      for (const c of mine) if (n < count(c)) list.push({ groupId: c.groupId, body: `burst ${sender} #${n} in ${c.groupId.slice(0, 8)} (${c.members.length} members)` });
    }
    plan.set(sender, list);
  }
  return plan;
}

/**
 * Every participant writes its planned messages one by one, as a person types: each goes into the outbox
 * and the outbox is flushed (what the relay does not take stays); every `syncEvery` writes it reads its
 * groups. Returns every message written, by payload id.
 */
export async function runBurst(params: {
  participants: MlsParticipant[];
  plan: Map<string, { groupId: string; body: string }[]>;
  syncEvery: number;
  /** after each write, e.g. a member's periodic key update */
  afterWrite?: (participant: MlsParticipant, n: number) => Promise<void>;
}): Promise<Map<string, OutgoingMessage>> {
  const written = new Map<string, OutgoingMessage>();
  await Promise.all(
    params.participants.map(async (p) => {
      const planned = params.plan.get(p.username) ?? [];
      for (let n = 0; n < planned.length; n++) {
        const message: OutgoingMessage = { id: newPayloadId(), sentAt: Date.now(), ...planned[n], from: p.username };
        written.set(message.id, message);
        p.outbox.push(message);
        await p.flushOutbox();
        if (n % params.syncEvery === params.syncEvery - 1) await p.sync();
        await params.afterWrite?.(p, n);
        // Encryption resolves in microtasks: let the sockets of the other participants be served.
        await new Promise((resolve) => setImmediate(resolve));
      }
    }),
  );
  return written;
}

/** Flushes every outbox until all are empty (an unreachable relay is retried). */
export async function drainOutboxes(participants: MlsParticipant[], timeoutMs = 90_000): Promise<void> {
  await Promise.all(
    participants.map((p) =>
      waitFor(
        `${p.username}'s outbox to empty`,
        async () => {
          await p.flushOutbox();
          return p.outbox.length === 0;
        },
        timeoutMs,
        250,
      ),
    ),
  );
}

/** The payload ids each participant must be shown: every message of its conversations written by someone else. */
export function expectedIds(participant: MlsParticipant, conversations: Conversation[], written: Map<string, OutgoingMessage>): Set<string> {
  const mine = new Set(conversations.filter((c) => c.members.includes(participant.username)).map((c) => c.groupId));
  return new Set([...written.values()].filter((m) => mine.has(m.groupId) && m.from !== participant.username).map((m) => m.id));
}

/** Syncs every participant until each has been shown everything it expects. */
export async function syncUntilDelivered(participants: MlsParticipant[], conversations: Conversation[], written: Map<string, OutgoingMessage>, timeoutMs = 90_000): Promise<void> {
  await Promise.all(
    participants.map((p) => {
      const expected = expectedIds(p, conversations, written);
      return waitFor(
        `${p.username} to be shown its ${expected.size} messages`,
        async () => {
          await p.sync();
          return [...expected].every((id) => p.seen.has(id));
        },
        timeoutMs,
        250,
      );
    }),
  );
}

export interface DeliveryCounts {
  /** (recipient, message) pairs expected */
  expected: number;
  /** expected pairs never shown */
  lost: number;
  /** pairs shown more than once (the history should make this impossible) */
  shownTwice: number;
  /** shown messages that were never written, or shown with another sender, body or group than written */
  wrong: string[];
  /** how often each (recipient, id) was shown */
  times: Map<string, number>;
}

export function countDeliveries(participants: MlsParticipant[], conversations: Conversation[], written: Map<string, OutgoingMessage>): DeliveryCounts {
  const times = new Map<string, number>();
  const wrong: string[] = [];
  let expected = 0;
  let lost = 0;
  for (const p of participants) {
    for (const shown of p.shown) {
      const m = written.get(shown.id);
      if (!m || m.from !== shown.from || m.body !== shown.body || m.groupId !== shown.groupId || m.sentAt !== shown.sentAt) wrong.push(`${p.username} was shown ${shown.id}`);
      const key = `${p.username}\n${shown.id}`;
      times.set(key, (times.get(key) ?? 0) + 1);
    }
    for (const id of expectedIds(p, conversations, written)) {
      expected++;
      if (!times.has(`${p.username}\n${id}`)) lost++;
    }
  }
  const shownTwice = [...times.values()].filter((n) => n > 1).length;
  return { expected, lost, shownTwice, wrong, times };
}

/** Of `ids`, those not shown exactly once to every recipient. */
export function notShownOnce(counts: DeliveryCounts, conversations: Conversation[], written: Map<string, OutgoingMessage>, ids: Iterable<string>): string[] {
  return [...ids].filter((id) => {
    const m = written.get(id)!;
    const recipients = conversations.find((c) => c.groupId === m.groupId)!.members.filter((u) => u !== m.from);
    return recipients.some((u) => counts.times.get(`${u}\n${id}`) !== 1);
  });
}

/**
 * What the relay's logs hold of the messages written, read group by group by a member: application
 * entries of a written id (copies), ids held more than once, ids not held exactly once, and entries of
 * ids nobody wrote. The history's check by payload id must not be what hides a duplicate.
 */
export async function relayLogCounts(
  participants: MlsParticipant[],
  conversations: Conversation[],
  written: Map<string, OutgoingMessage>,
): Promise<{ copies: number; duplicates: number; notOnce: string[]; unknown: number }> {
  const out = { copies: 0, duplicates: 0, notOnce: [] as string[], unknown: 0 };
  for (const c of conversations) {
    const member = participants.find((p) => p.username === c.members[0])!;
    const held = await readRelayLog(member.ds, c.groupId);
    const ids = new Set([...written.values()].filter((m) => m.groupId === c.groupId).map((m) => relayMessageId(m.id)));
    for (const id of ids) {
      const n = held.applications.get(id) ?? 0;
      out.copies += n;
      if (n > 1) out.duplicates++;
      if (n !== 1) out.notOnce.push(`${c.groupId.slice(0, 8)}/${id}`);
    }
    out.unknown += [...held.applications.keys()].filter((id) => !ids.has(id)).length;
  }
  return out;
}

/** A group's whole log as the relay holds it, read by a member: how often each id occurs, by kind, and the relay's epoch. */
export async function readRelayLog(ds: ObservedDsClient, groupId: string): Promise<{ applications: Map<string, number>; handshakes: Map<string, number>; epoch: number; entries: number }> {
  const applications = new Map<string, number>();
  const handshakes = new Map<string, number>();
  let after = 0;
  let epoch = 0;
  let entries = 0;
  for (;;) {
    const page = await ds.log(groupId, after, V2_LIMITS.readLimit);
    epoch = page.epoch;
    for (const e of page.entries) {
      const ids = e.kind === "application" ? applications : handshakes;
      ids.set(e.id, (ids.get(e.id) ?? 0) + 1);
      after = e.seq;
      entries++;
    }
    if (page.entries.length < V2_LIMITS.readLimit) break;
  }
  return { applications, handshakes, epoch, entries };
}

/** The relay's message id of an application message: the payload id, prefixed (cli/mls/device.ts send). */
export const relayMessageId = (payloadId: string) => `m${payloadId}`;

/**
 * A TCP proxy in front of one relay port that passes everything through, except that the next connection
 * after `cutNextAnswer` gets no answer: its request reaches the relay, and once the relay's first answer
 * bytes come back (so the relay has stored what was asked), `onAnswer` runs and the client's connection is
 * reset. With `onAnswer` killing the relay, the caller's request is stored and its answer lost.
 */
export interface AnswerCuttingProxy extends AnswerCutter {
  port: number;
  url: string;
  close(): Promise<void>;
}

/** Something that can lose the relay's answer to the next request or append, once the relay has stored it. */
export interface AnswerCutter {
  /** `onAnswer` runs when the relay's answer comes (it is never delivered); the client's connection is then reset. */
  cutNextAnswer(onAnswer: () => Promise<void>): void;
}

export async function startAnswerCuttingProxy(targetPort: () => number): Promise<AnswerCuttingProxy> {
  const port = await freePort();
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => s.destroy());
  };
  let nextCut: (() => Promise<void>) | undefined;
  const server = net.createServer((client) => {
    const cut = nextCut;
    nextCut = undefined;
    const upstream = net.connect(targetPort(), "127.0.0.1");
    track(client);
    track(upstream);
    client.pipe(upstream);
    client.on("close", () => upstream.destroy());
    if (!cut) {
      upstream.pipe(client);
      upstream.on("close", () => client.destroy());
      return;
    }
    let answered = false;
    upstream.on("data", () => {
      if (answered) return;
      answered = true;
      // The answer is dropped: the client hears nothing until its connection is reset below.
      void cut()
        .catch(() => undefined)
        .finally(() => {
          client.destroy();
          upstream.destroy();
        });
    });
    upstream.on("close", () => {
      if (!answered) client.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    cutNextAnswer: (onAnswer) => (nextCut = onAnswer),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A TCP proxy in front of one relay port for WebSocket clients, passing everything through, except that
 * after `cutNextAnswer` what the relay sends on any connection is held back: once the relay's next
 * `appended` answer is among it (sent when the message is durable), `onAnswer` runs and the connections
 * are reset, the answer never delivered. With `onAnswer` killing the relay, an append frame is stored
 * and its answer lost with the socket. Connections made afterwards pass through again.
 */
export async function startSocketAnswerHolder(targetPort: () => number): Promise<AnswerCuttingProxy> {
  const port = await freePort();
  const links = new Set<{ client: net.Socket; upstream: net.Socket }>();
  let armed: { onAnswer: () => Promise<void>; answered: boolean } | undefined;
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort(), "127.0.0.1");
    const link = { client, upstream };
    links.add(link);
    const drop = () => {
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.on("data", (chunk: Buffer) => upstream.write(chunk));
    // Server frames are unmasked: the answer's JSON is plain in the bytes (held per connection).
    let held = "";
    upstream.on("data", (chunk: Buffer) => {
      const cut = armed;
      if (!cut) return void client.write(chunk);
      if (cut.answered) return;
      held += chunk.toString("latin1");
      if (!held.includes('"type":"appended"')) return;
      cut.answered = true;
      void cut
        .onAnswer()
        .catch(() => undefined)
        .finally(() => {
          if (armed === cut) armed = undefined;
          for (const l of [...links]) {
            l.client.destroy();
            l.upstream.destroy();
          }
        });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    cutNextAnswer: (onAnswer) => (armed = { onAnswer, answered: false }),
    close: async () => {
      for (const l of links) {
        l.client.destroy();
        l.upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The pending commit of a group as its device saved it (id and epoch), if any. */
const pendingOf = (p: MlsParticipant, groupId: string) => {
  const pending = p.groupFile(groupId)?.pending;
  return pending && { id: pending.id, epoch: pending.epoch };
};

export interface MidwayKill {
  /** the adopter's commit: stored by the relay, its answer cut by the kill */
  adopter: { pending?: { id: string; epoch: number }; error?: string };
  /** the abandoner's commit: built and saved as pending before the kill, offered only after it */
  abandoner: { pending?: { id: string; epoch: number }; error?: string };
  /** a message stored by the relay whose answer the kill cut (it stays in its sender's outbox) */
  lostAnswer?: LostAnswer;
  /** the same, for a message sent as an append frame on its sender's WebSocket */
  socketLostAnswer?: LostAnswer;
}

export interface LostAnswer {
  message: OutgoingMessage;
  /** accepted as far as its sender knows */
  accepted: boolean;
}

/** A message whose answer is to be lost: `participant` writes it into `groupId`, and `cut` loses the answer. */
export interface LostAnswerCase {
  participant: MlsParticipant;
  cut: AnswerCutter;
  groupId: string;
}

/**
 * Once `armed` resolves, the relay dies with work in the middle of it, each case made certain rather than
 * left to timing:
 *  - the adopter's key update: its commit goes through `adopterCut`, is stored, and its answer is cut;
 *  - the abandoner's key update: its commit is built and saved as pending, and offered only once the relay
 *    is dead;
 *  - optionally one more message from `lostAnswer.participant` into `lostAnswer.groupId` through its own
 *    cutting proxy: stored, answer cut; and likewise `socketLostAnswer`, whose participant sends it on
 *    its WebSocket (the cutter holds that socket's answers). A socket append left unanswered goes over
 *    HTTP after SOCKET_APPEND_TIMEOUT_MS, to a relay still alive: so it is written only once all the others
 *    are in place, and the relay dies as soon as it is stored.
 * `kill` runs once all of them are at that point. Resolves when each has ended (each may fail).
 */
export async function killMidway(params: {
  armed: Promise<void>;
  groupId: string;
  adopter: MlsParticipant;
  adopterCut: AnswerCuttingProxy;
  abandoner: MlsParticipant;
  lostAnswer?: LostAnswerCase;
  socketLostAnswer?: LostAnswerCase;
  kill: () => Promise<void>;
}): Promise<MidwayKill> {
  await params.armed;
  const outcome: MidwayKill = { adopter: {}, abandoner: {} };
  const deferred = () => {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    return { promise, resolve };
  };
  const abandonerReady = deferred();
  const killed = deferred();
  /** the adopter's answer is held, the abandoner's commit built, the HTTP message stored */
  const othersReady = deferred();
  const lostCases = [
    { key: "lostAnswer" as const, params: params.lostAnswer, stored: deferred(), after: Promise.resolve() },
    { key: "socketLostAnswer" as const, params: params.socketLostAnswer, stored: deferred(), after: othersReady.promise },
  ];
  const [httpCase, socketCase] = lostCases;
  for (const c of lostCases) if (!c.params) c.stored.resolve();
  let killing: Promise<void> | undefined;
  const killOnce = () =>
    (killing ??= (async () => {
      await Promise.all([abandonerReady.promise, httpCase.stored.promise]);
      othersReady.resolve();
      await socketCase.stored.promise;
      await params.kill();
      killed.resolve();
    })());
  const update = async (p: MlsParticipant, before: () => Promise<void>, record: MidwayKill["adopter"]) => {
    try {
      await p.exclusive(async () => {
        // Set inside the device's turn, so that only this update's commit meets it.
        p.ds.beforeNextCommit = async () => {
          record.pending = pendingOf(p, params.groupId);
          await before();
        };
        await p.device.updateKeys(params.groupId);
      });
    } catch (error) {
      record.error = isChatError(error) ? error.code : String(error);
    }
  };
  const adopterDone = update(params.adopter, async () => params.adopterCut.cutNextAnswer(killOnce), outcome.adopter);
  const abandonerDone = update(
    params.abandoner,
    async () => {
      abandonerReady.resolve();
      await killed.promise;
    },
    outcome.abandoner,
  );
  const messagesDone = lostCases.map(async ({ key, params: lost, stored, after }) => {
    if (!lost) return;
    await after;
    const { participant, cut, groupId } = lost;
    const message: OutgoingMessage = { id: newPayloadId(), sentAt: Date.now(), body: `the answer to this one is lost (${key})`, groupId, from: participant.username };
    const record: LostAnswer = (outcome[key] = { message, accepted: false });
    participant.ds.beforeApplication = async (relayId) => {
      if (relayId !== relayMessageId(message.id)) return;
      participant.ds.beforeApplication = undefined;
      cut.cutNextAnswer(async () => {
        stored.resolve();
        await killed.promise;
      });
    };
    participant.outbox.push(message);
    try {
      record.accepted = (await participant.flushOutbox()).some((m) => m.id === message.id);
    } finally {
      // Whatever happens to it, the relay is killed and nobody waits forever.
      stored.resolve();
    }
  });
  // Whatever happens to one of them, the relay is killed and nobody waits forever.
  void abandonerDone.then(abandonerReady.resolve);
  await adopterDone;
  await killOnce();
  await Promise.all([abandonerDone, ...messagesDone]);
  return outcome;
}
