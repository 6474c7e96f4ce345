/**
 * The browser client's entry: settings → log in / register / link → main screen. One status bar (live
 * regions) for progress, news and errors; every failure is shown as its code and text, never thrown.
 */
import "./zod-jitless";
import "./styles.css";
import { Account, logoutEverywhere, rememberedSession, type Session } from "./account";
import { keystoreJson, localKeys } from "./keystore";
import { accountHooks, openMessenger } from "./messenger";
import type { Messenger } from "./messenger-types";
import { RelayApi } from "./relay-api";
import { connectDeployment, loadSettings, type Deployment, type Settings } from "./settings";
import { authScreen } from "./ui/auth-screens";
import { clear, el, errorMessage } from "./ui/dom";
import { MainScreen } from "./ui/main-screen";
import { settingsScreen } from "./ui/settings-screen";
import { StatusBar } from "./ui/status";

/** How often the owner's account is checked on chain for a pending reset while logged in. */
const OWN_ACCOUNT_CHECK_MS = 60_000;

class App {
  private readonly status = new StatusBar();
  private readonly screen = el("main", { id: "screen" });
  private readonly relay = new RelayApi();
  private deployment: Deployment | undefined;
  private account: Account | undefined;
  private messenger: Messenger | undefined;
  private main: MainScreen | undefined;
  private session: Session | undefined;
  private ownCheck: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly root: HTMLElement) {
    root.append(el("a", { href: "#screen", class: "skip" }, "Skip to content"), this.status.element, this.screen);
  }

  private show(node: HTMLElement): void {
    clear(this.screen);
    this.screen.append(node);
    (node.querySelector("h1, h2") as HTMLElement | null)?.setAttribute("tabindex", "-1");
  }

  async start(): Promise<void> {
    await this.connect(loadSettings());
  }

  private async connect(settings: Settings): Promise<void> {
    this.deployment?.chain.close();
    this.deployment = undefined;
    this.status.progress("connecting to the chain");
    try {
      this.deployment = await connectDeployment(settings, this.relay);
    } catch (error) {
      this.showSettings(settings, errorMessage(error));
      return;
    } finally {
      this.status.progress(null);
    }
    this.account = new Account(this.relay, this.deployment, accountHooks, (text) => this.status.progress(text));
    this.showAuth();
  }

  private showSettings(settings: Settings, reason?: string): void {
    this.show(settingsScreen({ settings, status: this.status, reason, onSaved: (saved) => void this.connect(saved) }));
  }

  private showAuth(note?: string): void {
    const account = this.account!;
    this.show(
      authScreen({
        account,
        status: this.status,
        username: rememberedSession()?.username,
        beforeLogin: async (username) => {
          // A pending reset is news the owner needs before anything else; a failed check is not a failed login.
          try {
            const state = await account.checkOwnAccount(username.trim());
            if (state.pendingReset && !state.pendingReset.toThisBrowser) this.status.warn(`A RESET of ${state.username} is pending on chain: see the banner after logging in.`);
          } catch {
            // unknown user or chain trouble: the login itself reports it
          }
        },
        onSession: (session, text) => void this.enter(session, text),
        onSettings: () => this.showSettings(loadSettings()),
      }),
    );
    if (note) this.status.notice(note);
  }

  private async enter(session: Session, note?: string): Promise<void> {
    this.session = session;
    const main = new MainScreen(session, this.status, {
      rotateKey: (password) => this.rotateKey(password),
      logout: () => this.logout(),
      downloadKeystore: () => this.downloadKeystore(),
      cancelReset: (password) => this.cancelReset(password),
    });
    this.main = main;
    this.show(main.element);
    this.status.clear();
    if (note) this.status.notice(note);
    else this.status.notice(`Logged in as ${session.username} until ${new Date(session.expiresAt).toLocaleString()}`);
    void this.checkOwnAccount();
    this.ownCheck = setInterval(() => void this.checkOwnAccount(), OWN_ACCOUNT_CHECK_MS);
    try {
      this.messenger = await openMessenger(session);
      if (this.main === main) main.attach(this.messenger);
    } catch (error) {
      if (this.main === main) main.engineFailed(errorMessage(error));
    }
  }

  private async checkOwnAccount(): Promise<void> {
    if (!this.session || !this.account || !this.main) return;
    try {
      this.main.showOwnAccount(await this.account.checkOwnAccount(this.session.username));
    } catch (error) {
      this.status.warn(`could not check ${this.session.username} on chain (${errorMessage(error)})`);
    }
  }

  private async rotateKey(password: string): Promise<void> {
    const result = await this.account!.rotateKey(this.session!, password);
    this.session = result.session;
    this.main?.setSession(result.session);
    this.status.notice(`Rotated to key ${result.keyIndex} in block ${result.blockNumber}. New fingerprint: ${result.fingerprint}`);
    if (result.warning) this.status.warn(result.warning);
  }

  private async cancelReset(password: string | undefined): Promise<void> {
    const session = this.session!;
    const result = await this.account!.cancelReset(session.username, { session, password });
    this.status.notice(`Cancelled the reset (it would have taken effect at ${new Date(result.effectiveAt * 1000).toLocaleString()}), confirmed on chain in block ${result.blockNumber}. Whoever requested it knows your password: change it now.`);
    await this.checkOwnAccount();
  }

  /** The current key's keystore as a file, in the format `chat` reads (users/<name>/keys/<index>.json). */
  private async downloadKeystore(): Promise<void> {
    const session = this.session!;
    const keys = (await localKeys(session.username)).filter((key) => !key.pending);
    for (const key of keys) {
      const json = await keystoreJson(session.username, key.index);
      if (!json) continue;
      const url = URL.createObjectURL(new Blob([json], { type: "application/json" }));
      const link = el("a", { href: url, download: `${session.username}-key-${key.index}.json`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    }
    this.status.notice(`Downloaded ${keys.length} password-encrypted key file(s) of ${session.username}.`);
  }

  private async logout(): Promise<void> {
    if (this.ownCheck) clearInterval(this.ownCheck);
    this.ownCheck = undefined;
    this.main?.detach();
    this.main = undefined;
    const messenger = this.messenger;
    this.messenger = undefined;
    await messenger?.close().catch(() => undefined);
    const session = this.session ?? rememberedSession();
    this.session = undefined;
    const { warning } = await logoutEverywhere(this.relay, session);
    this.showAuth("Logged out; this browser's data of the app is deleted.");
    if (warning) this.status.warn(warning);
  }
}

function mount(): void {
  const root = document.getElementById("app") ?? document.body;
  const app = new App(root);
  app.start().catch((error: unknown) => {
    root.append(el("p", { class: "error", role: "alert" }, errorMessage(error)));
  });
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount, { once: true });
else mount();
