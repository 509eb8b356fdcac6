// "Send a new link": asks the server to text the patient a fresh secure link now
// (POST /api/conversations/{id}/links/resend), whatever the notification window. The
// new link gives the patient a fresh set of date-of-birth tries; a locked link stays
// locked. Used in the thread header and on the "Link locked" banner; its status line
// says what happened (sent, or why not, e.g. the hourly limit and when to try again).
import { h } from "./dom.js";

const REASONS = {
  portal_inactive: "Secure Chat is turned off for this clinic.",
  opted_out: "The patient replied STOP: no text can be sent.",
  invalid_request: "This patient came from an unknown number: add their details first.",
  not_found: "This conversation no longer exists.",
};

export class NewLinkButton {
  // conversationId: () => the open conversation's id (null when none).
  constructor(api, conversationId) {
    this.api = api;
    this.conversationId = conversationId;
    this.blocked = "";
    this.button = h("button", { type: "button", class: "secondary new-link" },
                    "Send a new link");
    this.button.addEventListener("click", () => this.send());
    this.status = h("span", { class: "new-link-status", role: "status" });
    this.el = h("span", { class: "new-link-box" }, this.button, this.status);
  }

  // Disabled (with the reason as its tooltip) where the server would refuse anyway.
  setState({ portalActive, patient = {} }) {
    this.blocked = portalActive === false ? REASONS.portal_inactive
      : patient.opted_out ? REASONS.opted_out
        : patient.unknown ? REASONS.invalid_request : "";
    this.button.disabled = Boolean(this.blocked) || this.busy;
    this.button.title = this.blocked;
  }

  reset() {
    this.say("", "");
  }

  // Another console (or this one) sent a new link for this conversation.
  sent() {
    this.say("New link sent by text.", "sent");
  }

  async send() {
    const id = this.conversationId();
    if (!id || this.busy) return;
    this.busy = true;
    this.button.disabled = true;
    this.say("Sending…", "busy");
    try {
      await this.api.post(`/api/conversations/${encodeURIComponent(id)}/links/resend`);
      if (this.conversationId() === id) this.sent();
    } catch (exc) {
      if (this.conversationId() === id) this.say(`Not sent: ${reason(exc)}`, "error");
    } finally {
      this.busy = false;
      this.button.disabled = Boolean(this.blocked);
    }
  }

  say(text, state) {
    this.status.textContent = text;
    this.status.dataset.state = state;
  }
}

function reason(exc) {
  if (exc.code === "rate_limited") {
    const minutes = Math.max(1, Math.ceil((exc.retryAfterMs || 60_000) / 60_000));
    return `the hourly limit of new links is reached. Try again in ${minutes} min.`;
  }
  return REASONS[exc.code] || exc.message;
}
