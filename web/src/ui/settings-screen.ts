/**
 * Settings: the user's chain RPC URL and ChatRegistry contract. The chain the RPC reports decides the default
 * (the known deployment); on a local development chain the relay's /client-config.json contract is offered,
 * labelled as the relay's suggestion, and used only if the user takes it.
 */
import { ChatError } from "../../../protocol/errors";
import { DEFAULT_RPC_URL, inspectChain, parseContract, parseRpcUrl, saveSettings, type Settings } from "../settings";
import { busy, clear, el, field } from "./dom";
import type { StatusBar } from "./status";

export function settingsScreen(params: { settings: Settings; status: StatusBar; reason?: string; onSaved: (settings: Settings) => void }): HTMLElement {
  const { status } = params;
  const rpc = el("input", { type: "url", name: "rpc", autocomplete: "off", required: true, spellcheck: "false", value: params.settings.rpcUrl });
  const contract = el("input", { type: "text", name: "contract", autocomplete: "off", spellcheck: "false", placeholder: "0x…", pattern: "0x[0-9a-fA-F]{40}", value: params.settings.contract ?? "" });
  const chainInfo = el("div", { class: "chain-info", "aria-live": "polite" });
  const check = el("button", { type: "button" }, "Check chain");
  const save = el("button", { type: "submit", class: "primary" }, "Save");

  const showChain = async () => {
    clear(chainInfo);
    const view = await inspectChain(rpc.value);
    const lines: (HTMLElement | string)[] = [el("p", {}, `Chain id ${view.chainId} at ${parseRpcUrl(rpc.value)}.`)];
    if (view.known) lines.push(el("p", {}, `Known deployment on this chain: ${view.known.contract} (${view.known.note}). Leave the contract empty to use it.`));
    else lines.push(el("p", {}, "No known deployment on this chain: enter the contract address."));
    if (view.relaySuggestion) {
      const suggestion = view.relaySuggestion;
      const use = el("button", { type: "button" }, "Use this contract");
      use.addEventListener("click", () => {
        contract.value = suggestion.contract;
        contract.focus();
        status.notice(`Contract set to ${suggestion.contract} (${suggestion.label}); press Save to keep it.`);
      });
      lines.push(el("div", { class: "suggestion" }, el("p", {}, el("strong", {}, "Local development chain. "), `Contract ${suggestion.contract}, ${suggestion.label}.`), use));
    }
    for (const line of lines) chainInfo.appendChild(typeof line === "string" ? document.createTextNode(line) : line);
  };

  check.addEventListener("click", () => void busy([check, save], showChain, (error) => status.error(error)));
  const form = el(
    "form",
    { class: "card", "aria-labelledby": "settings-title" },
    el("h1", { id: "settings-title" }, "Settings"),
    params.reason ? el("p", { class: "error-box" }, params.reason) : null,
    field("Chain RPC URL", rpc, `Your own Ethereum JSON-RPC endpoint: keys are checked there, never at the relay. Default ${DEFAULT_RPC_URL}.`),
    field("ChatRegistry contract", contract, "Empty: the known deployment of the chain."),
    chainInfo,
    el("div", { class: "actions" }, check, save),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void busy(
      [check, save],
      async () => {
        const settings: Settings = { rpcUrl: parseRpcUrl(rpc.value) };
        if (contract.value.trim() !== "") settings.contract = parseContract(contract.value);
        else {
          const view = await inspectChain(settings.rpcUrl);
          if (!view.known) throw new ChatError("USAGE", `chain ${view.chainId} has no known deployment: enter the contract address`);
        }
        saveSettings(settings);
        params.onSaved(settings);
      },
      (error) => status.error(error),
    );
  });
  queueMicrotask(() => void showChain().catch((error: unknown) => status.error(error)));
  return form;
}
