/**
 * A modal form in a <dialog>: the browser keeps focus inside it, Escape closes it, Enter submits it. The
 * action runs with the form disabled; its error shows inside the dialog, which stays open to retry.
 */
import { busy, el, errorMessage, field } from "./dom";

export interface DialogField {
  name: string;
  label: string;
  type?: "text" | "password";
  hint?: string;
  autocomplete?: string;
  required?: boolean;
}

export function formDialog(params: {
  title: string;
  intro?: string;
  fields: DialogField[];
  submitLabel: string;
  danger?: boolean;
  /** may name where the focus goes once the dialog closes (else back where it was): while the dialog is up, nothing outside it can take the focus */
  action: (values: Record<string, string>) => Promise<void | HTMLElement | null>;
}): void {
  const inputs = params.fields.map((f) =>
    el("input", { type: f.type ?? "text", name: f.name, autocomplete: f.autocomplete ?? "off", autocapitalize: "none", spellcheck: "false", required: f.required ?? true }),
  );
  const error = el("p", { class: "error", role: "alert" });
  const submit = el("button", { type: "submit", class: params.danger ? "danger" : "primary" }, params.submitLabel);
  const cancel = el("button", { type: "button" }, "Cancel");
  const titleId = `dialog-title-${Math.random().toString(36).slice(2)}`;
  const form = el(
    "form",
    {},
    el("h2", { id: titleId }, params.title),
    params.intro ? el("p", {}, params.intro) : null,
    ...params.fields.map((f, i) => field(f.label, inputs[i], f.hint)),
    error,
    el("div", { class: "actions" }, cancel, submit),
  );
  const dialog = el("dialog", { "aria-labelledby": titleId }, form);
  const previousFocus = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  const close = (focusTarget?: HTMLElement | null) => {
    dialog.close();
    dialog.remove();
    (focusTarget ?? previousFocus)?.focus();
  };
  cancel.addEventListener("click", () => close());
  dialog.addEventListener("cancel", (event) => {
    event.preventDefault();
    close();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    error.textContent = "";
    void busy(
      [...inputs, submit, cancel],
      async () => {
        const focusTarget = await params.action(Object.fromEntries(params.fields.map((f, i) => [f.name, inputs[i].value])));
        close(focusTarget instanceof HTMLElement ? focusTarget : null);
      },
      (failure) => {
        error.textContent = errorMessage(failure);
      },
    );
  });
  document.body.appendChild(dialog);
  dialog.showModal();
  (inputs[0] ?? submit).focus();
}

/** A yes/no question in a <dialog>; resolves true on confirm. */
export function confirmDialog(params: { title: string; text: string; confirmLabel: string; danger?: boolean; extra?: HTMLElement }): Promise<boolean> {
  return new Promise((resolve) => {
    const yes = el("button", { type: "button", class: params.danger ? "danger" : "primary" }, params.confirmLabel);
    const no = el("button", { type: "button" }, "Cancel");
    const titleId = `dialog-title-${Math.random().toString(36).slice(2)}`;
    const dialog = el("dialog", { "aria-labelledby": titleId }, el("h2", { id: titleId }, params.title), el("p", {}, params.text), params.extra ?? null, el("div", { class: "actions" }, no, yes));
    const previousFocus = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    const done = (answer: boolean) => {
      dialog.close();
      dialog.remove();
      previousFocus?.focus();
      resolve(answer);
    };
    yes.addEventListener("click", () => done(true));
    no.addEventListener("click", () => done(false));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      done(false);
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    no.focus();
  });
}
