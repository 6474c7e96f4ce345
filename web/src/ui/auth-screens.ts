/**
 * Log in, register, and link this browser to an existing account. Each is a form (Enter submits) with
 * labelled fields; a call in flight disables the form; progress and errors go to the status bar.
 */
import { ChatError } from "../../../protocol/errors";
import { USERNAME_RULE } from "../../../protocol/username";
import type { Account, LinkRequest, Session } from "../account";
import { busy, clear, el, field, localTime } from "./dom";
import type { StatusBar } from "./status";

export type AuthMode = "login" | "register" | "link";

export interface AuthScreenParams {
  account: Account;
  status: StatusBar;
  username?: string;
  mode?: AuthMode;
  /** the owner's own chain check, run before the password is used (a pending reset is news first) */
  beforeLogin: (username: string) => Promise<void>;
  onSession: (session: Session, note?: string) => void;
  onSettings: () => void;
}

function usernameInput(value = ""): HTMLInputElement {
  return el("input", { type: "text", name: "username", autocomplete: "username", autocapitalize: "none", spellcheck: "false", required: true, minlength: 3, maxlength: 32, pattern: "[a-z0-9_]{3,32}", value });
}

function passwordInput(autocomplete: "current-password" | "new-password", name = "password"): HTMLInputElement {
  return el("input", { type: "password", name, autocomplete, required: true });
}

export function authScreen(params: AuthScreenParams): HTMLElement {
  const root = el("section", { class: "card auth", "aria-labelledby": "auth-title" });
  const body = el("div");
  const tabs: Record<AuthMode, HTMLButtonElement> = {
    login: el("button", { type: "button" }, "Log in"),
    register: el("button", { type: "button" }, "Register"),
    link: el("button", { type: "button" }, "Link this browser"),
  };
  const settings = el("button", { type: "button", class: "link-button" }, "Settings");
  settings.addEventListener("click", params.onSettings);
  let mode: AuthMode = params.mode ?? "login";
  let linkInProgress: LinkRequest | undefined;

  const show = (next: AuthMode) => {
    linkInProgress?.cancel();
    linkInProgress = undefined;
    mode = next;
    for (const [name, tab] of Object.entries(tabs)) tab.setAttribute("aria-pressed", String(name === mode));
    clear(body);
    params.status.clear();
    body.appendChild(mode === "login" ? loginForm() : mode === "register" ? registerForm() : linkForm());
    body.querySelector("input")?.focus();
  };
  for (const [name, tab] of Object.entries(tabs)) tab.addEventListener("click", () => show(name as AuthMode));

  const loginForm = () => {
    const username = usernameInput(params.username);
    const password = passwordInput("current-password");
    const submit = el("button", { type: "submit", class: "primary" }, "Log in");
    const form = el("form", { "aria-label": "Log in" }, field("Username", username), field("Password", password), el("div", { class: "actions" }, submit));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void busy(
        [username, password, submit],
        async () => {
          await params.beforeLogin(username.value);
          const session = await params.account.login(username.value, password.value);
          password.value = "";
          params.onSession(session);
        },
        (error) => params.status.error(error),
      );
    });
    return form;
  };

  const registerForm = () => {
    const username = usernameInput();
    const password = passwordInput("new-password");
    const again = passwordInput("new-password", "password-again");
    const submit = el("button", { type: "submit", class: "primary" }, "Register");
    const form = el(
      "form",
      { "aria-label": "Register" },
      field("Username", username, USERNAME_RULE),
      field("Password", password, "It encrypts your key in this browser and proves who you are; it never leaves this browser."),
      field("Password again", again),
      el("div", { class: "actions" }, submit),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void busy(
        [username, password, again, submit],
        async () => {
          if (password.value !== again.value) throw new ChatError("BAD_REQUEST", "the two passwords differ");
          const result = await params.account.register(username.value, password.value);
          password.value = again.value = "";
          params.onSession(result.session, `Registered ${result.session.username} in block ${result.blockNumber}. Your key's fingerprint: ${result.fingerprint}`);
        },
        (error) => params.status.error(error),
      );
    });
    return form;
  };

  const linkForm = () => {
    const username = usernameInput(params.username);
    const password = passwordInput("current-password");
    const name = el("input", { type: "text", name: "device-name", maxlength: 64, autocomplete: "off", placeholder: "e.g. Browser at work" });
    const submit = el("button", { type: "submit", class: "primary" }, "Request link");
    const waiting = el("div", { class: "link-wait", "aria-live": "polite" });
    const form = el(
      "form",
      { "aria-label": "Link this browser" },
      el("p", {}, "Make this browser another device of an account you already use elsewhere. It never holds the account's key; a device that does approves it."),
      field("Username", username),
      field("Password", password, "The account's password; it also protects this device's keys here."),
      field("Device name (optional)", name),
      el("div", { class: "actions" }, submit),
      waiting,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void busy(
        [username, password, name, submit],
        async () => {
          const request = await params.account.startLink(username.value, password.value, name.value);
          linkInProgress = request;
          const cancel = el("button", { type: "button" }, "Cancel");
          cancel.addEventListener("click", () => request.cancel());
          clear(waiting);
          waiting.append(
            el("p", {}, `On a device that holds ${username.value}'s key, run:`),
            el("p", { class: "code" }, `chat device approve ${request.code}`),
            el("p", {}, "and check that it shows this fingerprint:"),
            el("p", { class: "code" }, request.fingerprint),
            el("p", {}, `Waiting for the approval until ${localTime(request.expiresAt)}…`),
            el("div", { class: "actions" }, cancel),
          );
          cancel.focus();
          try {
            const { session, warning } = await request.completed;
            password.value = "";
            params.onSession(session, warning);
          } finally {
            linkInProgress = undefined;
            clear(waiting);
          }
        },
        (error) => params.status.error(error),
      );
    });
    return form;
  };

  root.append(
    el("h1", { id: "auth-title" }, "eth-chat"),
    el("nav", { class: "tabs", "aria-label": "Account" }, tabs.login, tabs.register, tabs.link, settings),
    body,
  );
  queueMicrotask(() => show(mode));
  return root;
}
