/**
 * The page's announcements: a polite aria-live region for news (new messages, progress, results) and an
 * assertive one for errors, both visible. Screen readers read what is put here; nothing else interrupts.
 */
import { el, clear, errorMessage } from "./dom";

export class StatusBar {
  readonly element: HTMLElement;
  private readonly progressLine: HTMLElement;
  private readonly noticeLine: HTMLElement;
  private readonly errorLine: HTMLElement;

  constructor() {
    this.progressLine = el("p", { class: "progress", role: "status", "aria-live": "polite" });
    this.noticeLine = el("p", { class: "notice", "aria-live": "polite" });
    this.errorLine = el("p", { class: "error", role: "alert", "aria-live": "assertive" });
    this.element = el("div", { class: "status-bar" }, this.progressLine, this.noticeLine, this.errorLine);
  }

  progress(text: string | null): void {
    this.progressLine.textContent = text ?? "";
    this.progressLine.hidden = !text;
  }

  notice(text: string): void {
    this.errorLine.textContent = "";
    this.noticeLine.textContent = text;
  }

  error(error: unknown): void {
    this.errorLine.textContent = errorMessage(error);
  }

  warn(text: string): void {
    this.errorLine.textContent = text;
  }

  clear(): void {
    for (const line of [this.noticeLine, this.errorLine]) clear(line);
  }
}
