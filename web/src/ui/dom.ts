/**
 * DOM helpers of the UI. Text only ever goes in as text (textContent, attribute values, createElement):
 * nothing a user, a peer or a relay sends is parsed as HTML.
 */
import { ChatError } from "../../../protocol/errors";

type Child = Node | string | null | undefined | false;
type Attributes = Record<string, string | number | boolean | undefined | ((event: Event) => void)>;

/** An element with attributes (`on…` keys become listeners; booleans toggle) and text or element children. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Attributes = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") node.addEventListener(name.slice(2).toLowerCase(), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, ...children);
  return node;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

export function clear(node: Node): void {
  while (node.firstChild) node.removeChild(node.firstChild);
}

let idCounter = 0;
export function uniqueId(prefix: string): string {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled input (the label names it for screen readers and takes clicks). */
export function field(label: string, input: HTMLInputElement | HTMLTextAreaElement, hint?: string): HTMLElement {
  input.id ||= uniqueId("field");
  const hintNode = hint ? el("p", { class: "hint", id: `${input.id}-hint` }, hint) : null;
  if (hintNode) input.setAttribute("aria-describedby", hintNode.id);
  return el("div", { class: "field" }, el("label", { for: input.id }, label), input, hintNode);
}

/** A readable message for any error: the stable code and its text; never a stack. */
export function errorMessage(error: unknown): string {
  if (error instanceof ChatError) return `${error.code}: ${error.message}`;
  if (error instanceof Error) return `INTERNAL: ${error.message}`;
  return `INTERNAL: ${String(error)}`;
}

export function localTime(ms: number): string {
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/**
 * Runs `work` with `controls` disabled (a call in flight cannot be started twice), and reports a failure
 * through `onError` instead of letting it escape.
 */
export async function busy<T>(controls: (HTMLButtonElement | HTMLInputElement | HTMLTextAreaElement | HTMLFieldSetElement)[], work: () => Promise<T>, onError: (error: unknown) => void): Promise<T | undefined> {
  const before = controls.map((control) => control.disabled);
  for (const control of controls) control.disabled = true;
  try {
    return await work();
  } catch (error) {
    onError(error);
    return undefined;
  } finally {
    controls.forEach((control, i) => (control.disabled = before[i]));
  }
}
