/**
 * The main screen: conversation list, the open conversation (timeline, members, composer), the account
 * menu, and the banner for a pending reset of the user's own account. Everything shown comes from the
 * Messenger (rendered again on each change it reports) and from the chain checks of account.ts.
 * On a narrow screen the list and the conversation take turns, with a Back button.
 */
import { utf8Length } from "../../../protocol/bytes";
import { formatSafetyNumber } from "../../../protocol/safety-number";
import { MAX_BODY_BYTES } from "../../../protocol/mls/application-payload";
import { ChatError } from "../../../protocol/errors";
import { assertUsername } from "../../../protocol/username";
import type { OwnAccountState, Session } from "../account";
import type { ConversationSummary, Messenger, TimelineItem } from "../messenger-types";
import { confirmDialog, formDialog } from "./dialog";
import { busy, clear, el, localTime } from "./dom";
import type { StatusBar } from "./status";

export interface MainScreenActions {
  rotateKey(password: string): Promise<void>;
  logout(): Promise<void>;
  downloadKeystore?(): Promise<void>;
  cancelReset(password: string | undefined): Promise<void>;
}

const STATE_LABEL = { sending: "sending…", stored: "stored", delivered: "delivered", failed: "failed" } as const;

/** What decides an item's look besides its id (the rest of an item never changes): a new key means a new node. */
function itemKey(item: TimelineItem): string {
  return item.type === "message" ? `${item.id} ${item.state ?? ""}` : `${item.id} ${item.keyChange?.verified ?? ""}`;
}

function parseUsernames(text: string): string[] {
  const names = text
    .split(/[\s,]+/)
    .map((name) => name.trim().toLowerCase())
    .filter((name) => name !== "");
  if (names.length === 0) throw new ChatError("BAD_REQUEST", "name at least one user");
  return [...new Set(names.map((name) => assertUsername(name)))];
}

/** A safety number in 3 lines of 4 groups; it may come already grouped, or as a sentence saying it is unavailable. */
function safetyNumberLines(value: string): string {
  const digits = value.replace(/\s+/g, "");
  return /^\d{60}$/.test(digits) ? formatSafetyNumber(digits, { lines: true }) : value;
}

/** The conversation list's nodes, kept between renders. */
interface ConversationList {
  newChat: HTMLButtonElement;
  newGroup: HTMLButtonElement;
  /** "No conversations yet." */
  empty: HTMLElement;
  items: HTMLElement;
  /** by conversation id */
  entries: Map<string, ListEntry>;
}

interface ListEntry {
  li: HTMLElement;
  button: HTMLButtonElement;
  title: HTMLElement;
  badge: HTMLElement;
  when: HTMLElement;
}

/** Sets a node's text only when it differs (an unchanged entry is not touched). */
function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) node.textContent = text;
}

export class MainScreen {
  readonly element: HTMLElement;
  private readonly banner: HTMLElement;
  private readonly listNode: HTMLElement;
  private readonly conversations: ConversationList;
  private readonly conversationNode: HTMLElement;
  private readonly layout: HTMLElement;
  private readonly engineNote: HTMLElement;
  private messenger: Messenger | undefined;
  private unsubscribe: (() => void) | undefined;
  private openId: string | undefined;
  /** incoming message ids already announced, so that a re-render announces only new ones */
  private announced = new Set<string>();
  private draft = "";
  /** What the open conversation shows, kept between renders so that a change touches only what it changed. */
  private shown: { id: string; title: string; members: string; header: HTMLElement; timeline: HTMLElement; nodes: Map<string, HTMLElement> } | undefined;

  constructor(
    private session: Session,
    private readonly status: StatusBar,
    private readonly actions: MainScreenActions,
  ) {
    const menuButton = el("button", { type: "button", "aria-haspopup": "true", "aria-expanded": "false", "aria-controls": "account-menu" }, `${session.username} ▾`);
    const rotate = el("button", { type: "button", role: "menuitem" }, "Rotate key");
    const backup = el("button", { type: "button", role: "menuitem" }, "Download key backup");
    const logout = el("button", { type: "button", role: "menuitem" }, "Log out");
    const menu = el("div", { id: "account-menu", class: "menu", role: "menu", hidden: true }, session.linked ? null : rotate, session.linked || !actions.downloadKeystore ? null : backup, logout);
    const toggleMenu = (open: boolean) => {
      menu.hidden = !open;
      menuButton.setAttribute("aria-expanded", String(open));
      if (open) (menu.querySelector("button") as HTMLButtonElement | null)?.focus();
    };
    menuButton.addEventListener("click", () => toggleMenu(menu.hidden));
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        toggleMenu(false);
        menuButton.focus();
      }
    });
    rotate.addEventListener("click", () => {
      toggleMenu(false);
      formDialog({
        title: "Rotate key",
        intro: "A new identity key replaces the current one on chain; your contacts are told of the change.",
        fields: [{ name: "password", label: "Password", type: "password", autocomplete: "current-password" }],
        submitLabel: "Rotate key",
        action: (values) => this.actions.rotateKey(values.password),
      });
    });
    backup.addEventListener("click", () => {
      toggleMenu(false);
      void busy([backup], () => this.actions.downloadKeystore!(), (error) => this.status.error(error));
    });
    logout.addEventListener("click", () => {
      toggleMenu(false);
      void (async () => {
        const ok = await confirmDialog({
          title: "Log out",
          text: session.linked
            ? "Logging out ends the session and deletes everything this app keeps in this browser, including this device's keys: to use it again you link it again."
            : "Logging out ends the session and deletes everything this app keeps in this browser, including your password-encrypted key. Download a key backup first unless another device holds your key.",
          confirmLabel: "Log out and delete local data",
          danger: true,
        });
        if (ok) await busy([logout, menuButton], () => this.actions.logout(), (error) => this.status.error(error));
      })();
    });

    this.banner = el("div", { class: "banner alarm", role: "alert", hidden: true });
    this.engineNote = el("p", { class: "engine-note", role: "status" }, "Messaging is starting…");
    this.listNode = el("nav", { class: "conversations", "aria-label": "Conversations" });
    this.conversations = this.conversationList();
    this.conversationNode = el("section", { class: "conversation", "aria-label": "Conversation" });
    this.layout = el("div", { class: "layout" }, this.listNode, this.conversationNode);
    this.element = el(
      "div",
      { class: "main-screen" },
      el("header", { class: "top" }, el("h1", {}, "eth-chat"), el("div", { class: "account" }, menuButton, menu)),
      this.banner,
      this.engineNote,
      this.layout,
    );
    this.render();
  }

  setSession(session: Session): void {
    this.session = session;
  }

  /** Messaging is up: render from it from now on. */
  attach(messenger: Messenger): void {
    this.messenger = messenger;
    this.engineNote.hidden = true;
    for (const c of messenger.conversations()) for (const item of messenger.timeline(c.id)) this.announced.add(item.id);
    this.unsubscribe = messenger.subscribe(() => this.onChange());
    this.render();
  }

  /** Messaging could not start: say why, keep the account functions. */
  engineFailed(text: string): void {
    this.engineNote.hidden = false;
    this.engineNote.textContent = `Messaging is not available: ${text}`;
  }

  detach(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** Shows or hides the pending-reset banner for the user's own account. */
  showOwnAccount(state: OwnAccountState | null): void {
    clear(this.banner);
    const pending = state?.pendingReset;
    if (!state || !pending || pending.toThisBrowser) {
      this.banner.hidden = true;
      return;
    }
    this.banner.hidden = false;
    const left = pending.effectiveAt - state.chainTime;
    const when = `${localTime(pending.effectiveAt * 1000)}${left > 0 ? ` (in about ${left < 7200 ? `${Math.max(1, Math.round(left / 60))} min` : `${Math.round(left / 3600)} h`})` : ""}`;
    this.banner.append(
      el("h2", {}, "A RESET of your account is pending"),
      el(
        "p",
        {},
        `Someone asked to move ${state.username} to a key that is NOT in this browser. It takes effect at ${when}. ` +
          "If you did not ask for it, someone knows your password: cancel it now, then change your password.",
      ),
    );
    if (state.canCancel) {
      const cancel = el("button", { type: "button", class: "danger" }, "Cancel reset");
      cancel.addEventListener("click", () =>
        void busy([cancel], () => this.actions.cancelReset(undefined), (error) => {
          if (error instanceof ChatError && error.code === "USAGE") {
            formDialog({
              title: "Cancel reset",
              fields: [{ name: "password", label: "Password", type: "password", autocomplete: "current-password" }],
              submitLabel: "Cancel reset",
              danger: true,
              action: (values) => this.actions.cancelReset(values.password),
            });
          } else this.status.error(error);
        }),
      );
      this.banner.append(el("div", { class: "actions" }, cancel));
    } else {
      this.banner.append(el("p", {}, "This browser does not hold your current key: cancel it from a device that does (chat cancel-reset)."));
    }
  }

  private onChange(): void {
    const messenger = this.messenger;
    if (!messenger) return;
    let incoming = 0;
    let lastFrom = "";
    for (const c of messenger.conversations()) {
      for (const item of messenger.timeline(c.id)) {
        if (this.announced.has(item.id)) continue;
        this.announced.add(item.id);
        if (item.type === "message" && !item.fromMe) {
          incoming++;
          lastFrom = `${item.from} in ${c.title}`;
        } else if (item.type === "event" && item.level !== "info") {
          this.status.warn(`${c.title}: ${item.text}`);
        }
      }
    }
    if (incoming === 1) this.status.notice(`New message from ${lastFrom}`);
    else if (incoming > 1) this.status.notice(`${incoming} new messages`);
    if (this.openId && document.visibilityState === "visible") messenger.markRead(this.openId);
    this.render();
  }

  private render(): void {
    this.renderList();
    this.renderConversation();
    this.layout.classList.toggle("showing-conversation", this.openId !== undefined);
  }

  /**
   * Builds the list's fixed parts once: the list is then updated in place, never rebuilt, so that a click
   * pressed on an entry while the list changes (a message arriving) is not lost with the node it was pressed on.
   */
  private conversationList(): ConversationList {
    const newChat = el("button", { type: "button" }, "New chat");
    const newGroup = el("button", { type: "button" }, "New group");
    newChat.addEventListener("click", () =>
      formDialog({
        title: "New chat",
        fields: [{ name: "peer", label: "Username" }],
        submitLabel: "Open chat",
        action: async (values) => this.open(await this.messenger!.openDirect(assertUsername(values.peer.trim().toLowerCase()))),
      }),
    );
    newGroup.addEventListener("click", () =>
      formDialog({
        title: "New group",
        fields: [
          { name: "name", label: "Group name" },
          { name: "members", label: "Members", hint: "usernames, separated by spaces or commas" },
        ],
        submitLabel: "Create group",
        action: async (values) => {
          const name = values.name.trim();
          if (name === "") throw new ChatError("BAD_REQUEST", "name the group");
          return this.open(await this.messenger!.createGroup(name, parseUsernames(values.members)));
        },
      }),
    );
    const empty = el("p", { class: "hint", hidden: true }, "No conversations yet.");
    const items = el("ul", { class: "conversation-list" });
    this.listNode.append(el("div", { class: "actions" }, newChat, newGroup), empty, items);
    return { newChat, newGroup, empty, items, entries: new Map() };
  }

  /** One conversation's entry in the list (its texts are set by renderList). */
  private listEntry(id: string): ListEntry {
    const title = el("span", { class: "title" });
    const badge = el("span", { class: "badge", hidden: true });
    const when = el("span", { class: "when" });
    const button = el("button", { type: "button", class: "conversation-item", "data-conversation": id }, title, badge, when);
    button.addEventListener("click", () => this.open(id));
    return { li: el("li", {}, button), button, title, badge, when };
  }

  private renderList(): void {
    const { newChat, newGroup, empty, items, entries } = this.conversations;
    const focused = document.activeElement;
    newChat.disabled = newGroup.disabled = !this.messenger;
    const conversations = [...(this.messenger?.conversations() ?? [])].sort((a, b) => b.lastActivity - a.lastActivity);
    empty.hidden = !this.messenger || conversations.length > 0;
    const wanted = new Set(conversations.map((c) => c.id));
    for (const [id, entry] of entries) {
      if (wanted.has(id)) continue;
      entry.li.remove();
      entries.delete(id);
    }
    conversations.forEach((c, i) => {
      let entry = entries.get(c.id);
      if (!entry) entries.set(c.id, (entry = this.listEntry(c.id)));
      setText(entry.title, c.title); // a group's title already starts with "#"
      setText(entry.badge, c.unread > 0 ? String(c.unread) : "");
      entry.badge.hidden = c.unread === 0;
      if (c.unread > 0) entry.badge.setAttribute("aria-label", `${c.unread} unread`);
      setText(entry.when, c.lastActivity > 0 ? localTime(c.lastActivity) : "");
      if (c.id === this.openId) entry.button.setAttribute("aria-current", "true");
      else entry.button.removeAttribute("aria-current");
      // Moved only when its place changed: the entries stay the same nodes.
      const at = items.children[i];
      if (at !== entry.li) items.insertBefore(entry.li, at ?? null);
    });
    // A moved entry loses focus in some browsers: the one that had it gets it back.
    if (focused instanceof HTMLElement && focused !== document.activeElement && focused.isConnected) focused.focus();
  }

  /** Opens conversation `id` and focuses its composer; returns the composer (a dialog that opened it focuses it once closed). */
  private open(id: string): HTMLTextAreaElement | null {
    if (this.openId !== id) this.draft = "";
    this.openId = id;
    this.messenger?.markRead(id);
    this.render();
    const composer = this.conversationNode.querySelector("textarea");
    composer?.focus();
    return composer;
  }

  private renderConversation(): void {
    const messenger = this.messenger;
    const conversation = messenger?.conversations().find((c) => c.id === this.openId);
    if (!messenger || !conversation) {
      this.openId = undefined;
      this.shown = undefined;
      clear(this.conversationNode);
      this.conversationNode.append(el("p", { class: "hint" }, messenger ? "Choose a conversation, or start one." : ""));
      return;
    }
    let shown = this.shown;
    if (!shown || shown.id !== conversation.id || shown.title !== conversation.title) {
      // Another conversation (or a renamed one): built anew, with an empty composer unless the draft is its own.
      clear(this.conversationNode);
      const timeline = el("ol", { class: "timeline", "aria-label": `Messages with ${conversation.title}`, tabindex: 0 });
      const header = this.headerNode(conversation);
      this.conversationNode.append(header, timeline, this.composer(conversation));
      shown = { id: conversation.id, title: conversation.title, members: "", header, timeline, nodes: new Map() };
      this.shown = shown;
    }
    const members = `${conversation.kind} ${conversation.members.join(",")}`;
    if (shown.members !== members) {
      const header = this.headerNode(conversation);
      shown.header.replaceWith(header);
      shown.header = header;
      shown.members = members;
    }
    // Only the items that are new or changed are built; the rest stay (a long history renders once, not on every change).
    const timeline = shown.timeline;
    const atBottom = timeline.scrollTop + timeline.clientHeight >= timeline.scrollHeight - 20;
    const items = messenger.timeline(conversation.id);
    const keys = items.map(itemKey);
    const wanted = new Set(keys);
    for (const [key, node] of shown.nodes) if (!wanted.has(key)) node.remove();
    const nodes = new Map<string, HTMLElement>();
    items.forEach((item, i) => {
      const node = shown.nodes.get(keys[i]) ?? this.itemNode(item);
      nodes.set(keys[i], node);
      const at = timeline.children[i];
      if (at !== node) timeline.insertBefore(node, at ?? null);
    });
    shown.nodes = nodes;
    if (atBottom) timeline.scrollTop = timeline.scrollHeight;
  }

  private headerNode(conversation: ConversationSummary): HTMLElement {
    const back = el("button", { type: "button", class: "back" }, "← Back");
    back.addEventListener("click", () => {
      this.openId = undefined;
      this.render();
      (this.listNode.querySelector("button") as HTMLButtonElement | null)?.focus();
    });
    return el("header", { class: "conversation-header" }, back, el("h2", {}, conversation.title), this.membersNode(conversation));
  }

  private membersNode(conversation: ConversationSummary): HTMLElement {
    const node = el("div", { class: "members" });
    if (conversation.kind === "direct") {
      node.append(el("p", {}, `Direct chat with ${conversation.members.filter((m) => m !== this.session.username).join(", ")}`));
      return node;
    }
    const list = el("ul", { class: "member-list", "aria-label": "Members" });
    for (const member of conversation.members) {
      const remove = el("button", { type: "button", class: "small", "aria-label": `Remove ${member}` }, "Remove");
      remove.addEventListener("click", () =>
        void (async () => {
          if (!(await confirmDialog({ title: "Remove member", text: `Remove ${member} from ${conversation.title}?`, confirmLabel: "Remove", danger: true }))) return;
          await busy([remove], () => this.messenger!.removeMember(conversation.id, member), (error) => this.status.error(error));
        })(),
      );
      list.append(el("li", {}, member, member === this.session.username ? " (you)" : remove));
    }
    const add = el("button", { type: "button" }, "Add member");
    add.addEventListener("click", () =>
      formDialog({
        title: `Add to ${conversation.title}`,
        fields: [{ name: "members", label: "Usernames", hint: "separated by spaces or commas" }],
        submitLabel: "Add",
        action: (values) => this.messenger!.addMembers(conversation.id, parseUsernames(values.members)),
      }),
    );
    node.append(el("details", {}, el("summary", {}, `${conversation.members.length} members`), list, add));
    return node;
  }

  private itemNode(item: TimelineItem): HTMLElement {
    if (item.type === "message") {
      const state = item.fromMe && item.state ? el("span", { class: `state state-${item.state}` }, STATE_LABEL[item.state]) : null;
      return el(
        "li",
        { class: `message ${item.fromMe ? "mine" : "theirs"}` },
        el("div", { class: "meta" }, el("span", { class: "from" }, item.fromMe ? "You" : item.from), " ", el("time", { datetime: new Date(item.sentAt).toISOString() }, localTime(item.sentAt)), " ", state),
        el("p", { class: "body" }, item.body),
      );
    }
    const level = item.keyChange?.kind === "reset" ? "alarm" : item.keyChange ? "warning" : item.level;
    const node = el("li", { class: `event level-${level}`, role: level === "info" ? undefined : "note" }, el("time", { datetime: new Date(item.at).toISOString() }, localTime(item.at)), " ", el("span", {}, item.text));
    const change = item.keyChange;
    if (change) {
      node.append(
        el("p", { class: "key-change" }, change.kind === "reset" ? `${change.username}'s account was RESET: this may be a new device, or someone else.` : `${change.username} rotated their key.`),
        el("p", {}, "Safety number (compare it with theirs, in person or on a call):"),
        el("pre", { class: "safety-number" }, safetyNumberLines(change.safetyNumber)),
      );
      if (change.verified) node.append(el("p", { class: "verified" }, "✓ Verified"));
      else {
        const verify = el("button", { type: "button" }, `Verify ${change.username}`);
        verify.addEventListener("click", () =>
          void (async () => {
            const ok = await confirmDialog({
              title: `Verify ${change.username}`,
              text: `Mark ${change.username}'s new key as verified only if the safety number matches what they see.`,
              extra: el("pre", { class: "safety-number" }, safetyNumberLines(change.safetyNumber)),
              confirmLabel: "It matches: verify",
            });
            if (ok) await busy([verify], () => this.messenger!.verify(change.username), (error) => this.status.error(error));
          })(),
        );
        node.append(verify);
      }
    }
    return node;
  }

  private composer(conversation: ConversationSummary): HTMLElement {
    const text = el("textarea", { name: "body", rows: 2, "aria-label": `Message to ${conversation.title}`, "aria-describedby": "composer-hint" });
    text.value = this.draft;
    const counter = el("span", { id: "composer-hint", class: "hint" }, "Enter sends, Shift+Enter adds a line");
    const send = el("button", { type: "submit", class: "primary" }, "Send");
    const form = el("form", { class: "composer" }, text, el("div", { class: "composer-side" }, send), counter);
    const check = () => {
      this.draft = text.value;
      const bytes = utf8Length(text.value);
      const over = bytes > MAX_BODY_BYTES;
      counter.textContent = over ? `Too long: ${bytes} of ${MAX_BODY_BYTES} bytes` : "Enter sends, Shift+Enter adds a line";
      counter.classList.toggle("error", over);
      text.setAttribute("aria-invalid", String(over));
      return !over;
    };
    text.addEventListener("input", check);
    text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = text.value;
      if (body.trim() === "") return;
      if (!check()) {
        this.status.error(new ChatError("MESSAGE_TOO_LONG", `a message is at most ${MAX_BODY_BYTES} bytes`));
        return;
      }
      // The box empties at once; the message shows as "sending" in the timeline, and a failure restores it.
      this.draft = "";
      text.value = "";
      void this.messenger!.send(conversation.id, body).catch((error: unknown) => {
        this.status.error(error);
        if (this.openId === conversation.id && this.draft === "") {
          this.draft = body;
          const box = this.conversationNode.querySelector("textarea");
          if (box) box.value = body;
        }
      });
    });
    return form;
  }
}
