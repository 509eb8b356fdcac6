// Automatic sign-out after the idle limit (HIPAA automatic logoff), with a warning first.
//
// The server ends a session `idle` seconds after the last user action it heard of, so
// the console counts from the same moment: the last request that counted as activity
// (`activity()`), not the last key press. Local key and pointer input is reported to the
// server (GET /api/me) at most every REPORT_EVERY_S seconds; the server records activity
// at most every 30 s too, so both clocks stay within that of each other and the console,
// counting from what it reported, never outlives the server's session.
//
// `min(60, idle/2)` seconds before the limit a role=alertdialog "Still there?" offers
// "Stay signed in" (which reports activity at once); at the limit `onTimeout()` runs.
// Tabs of one browser share their activity (BroadcastChannel), so an idle tab does not
// sign out a session that another tab is using.
import { h, duration } from "./dom.js";

const REPORT_EVERY_S = 30; // the server's own recording interval (server/auth.py)
const TICK_MS = 250;
const RETRY_MS = 5000; // after a report that did not reach the server
const INPUT_EVENTS = ["keydown", "pointerdown", "wheel", "touchstart"];

export class IdleGuard {
  constructor({ idleSeconds, report, onTimeout }) {
    this.idleSeconds = idleSeconds > 0 ? idleSeconds : 900;
    this.warnSeconds = Math.min(60, this.idleSeconds / 2);
    this.reportEveryMs = Math.min(REPORT_EVERY_S, this.idleSeconds / 4) * 1000;
    this.report = report; // () => Promise: a request that counts as activity
    this.onTimeout = onTimeout;
    this.lastActivity = Date.now();
    this.lastReport = 0;
    this.reporting = false;
    this.timer = null;
    this.dialog = null;
    this.channel = "BroadcastChannel" in window ? new BroadcastChannel("securechat-idle")
      : null;
    this.onInput = () => this.input();
    if (this.channel) {
      this.channel.onmessage = (event) => {
        if (event.data && event.data.activity > this.lastActivity) {
          this.lastActivity = event.data.activity;
          this.hideWarning();
        }
      };
    }
  }

  start() {
    this.lastActivity = Date.now();
    for (const type of INPUT_EVENTS) {
      window.addEventListener(type, this.onInput, { capture: true, passive: true });
    }
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    for (const type of INPUT_EVENTS) {
      window.removeEventListener(type, this.onInput, { capture: true });
    }
    this.hideWarning();
    if (this.dialog) this.dialog.remove();
    this.dialog = null;
    if (this.channel) this.channel.close();
    this.channel = null;
  }

  // The server just counted a request of ours as activity.
  activity() {
    this.lastActivity = Date.now();
    this.lastReport = this.lastActivity;
    if (this.channel) this.channel.postMessage({ activity: this.lastActivity });
    this.hideWarning();
  }

  // Local input: tell the server, at most every reportEveryMs (the warning's button and
  // input while it shows are reported at once).
  input() {
    if (!this.timer) return;
    const warned = this.dialog && this.dialog.open;
    if (warned || Date.now() - this.lastReport >= this.reportEveryMs) this.reportNow();
  }

  async reportNow() {
    if (this.reporting) return;
    this.reporting = true;
    this.lastReport = Date.now();
    try {
      await this.report(); // success calls activity() through the API hook
    } catch {
      // Offline: input tries again in a few seconds (a 401 is the shell's to handle).
      this.lastReport = Date.now() - this.reportEveryMs + RETRY_MS;
    } finally {
      this.reporting = false;
    }
  }

  remaining() {
    return this.idleSeconds * 1000 - (Date.now() - this.lastActivity);
  }

  tick() {
    const left = this.remaining();
    if (left <= 0) {
      this.stop();
      this.onTimeout();
    } else if (left <= this.warnSeconds * 1000) {
      this.showWarning(left);
    } else {
      this.hideWarning();
    }
  }

  showWarning(left) {
    if (!this.dialog) this.dialog = this.build();
    const seconds = Math.ceil(left / 1000);
    const text = `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
    if (this.countdown.textContent !== text) this.countdown.textContent = text;
    if (!this.dialog.open) {
      this.dialog.showModal();
      this.stayButton.focus();
    }
  }

  hideWarning() {
    if (this.dialog && this.dialog.open) this.dialog.close();
  }

  build() {
    this.countdown = h("strong", { class: "countdown" }, "");
    this.stayButton = h("button", { type: "button", class: "primary",
                                    onclick: () => this.reportNow() }, "Stay signed in");
    const dialog = h("dialog", {
      id: "idle-warning", class: "idle-dialog", role: "alertdialog",
      "aria-labelledby": "idle-title", "aria-describedby": "idle-text" },
      h("h2", { id: "idle-title" }, "Still there?"),
      h("p", { id: "idle-text" },
        "To protect patient information you will be signed out in ", this.countdown,
        ` after ${duration(this.idleSeconds)} without activity.`),
      h("div", { class: "actions" }, this.stayButton));
    // Escape means "I am here" too, never "close and carry on counting".
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      this.reportNow();
    });
    document.body.append(dialog);
    return dialog;
  }
}
