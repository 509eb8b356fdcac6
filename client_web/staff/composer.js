// The composer: a message to the open conversation, as SMS (the default) or, with the
// Secure Chat switch on, as a secure message. The switch applies to one message: it is
// off again after each send. Enter sends, Shift+Enter is a new line.
//
// What it shows depends on the account and the patient:
// * SMS (switch off): the warning `#sms-warning` and the segment count `#segments`.
// * Portal off: no switch at all, and `#portal-off` says who can turn it on.
// * Patient replied STOP: SMS is off (`#opted-out` says why); with the portal on the
//   switch stays on (secure only), with it off nothing can be sent.
// * Unknown number (an SMS from a number no patient has): no date of birth to verify,
//   so no Secure Chat; SMS only.
// * Held (`#held-draft`): the switch went away (portal off, patient unknown, a secure
//   send refused) while it was on over a draft. That draft is never sent as SMS by the
//   Enter meant for Secure Chat: Enter and Send only point to the alert's choice (send
//   it as SMS after a second confirmation, or discard it); emptying the box lifts the
//   hold, and Secure Chat coming back turns the switch on again for it.
import { h, icon, longDate } from "./dom.js";
import { HeldDraftAlert } from "./held-draft.js";
import { count, describe } from "./segments.js";

export class Composer {
  constructor({ onSend, onTyping }) {
    this.onSend = onSend;
    this.onTyping = onTyping;
    this.portalActive = false;
    this.patient = {};
    this.held = null; // why the draft is held ("portal" | "unknown"), or null
    this.build();
  }

  build() {
    this.input = h("textarea", { id: "message", name: "message", rows: "2",
                                 maxlength: "10000", placeholder: "Write a message…",
                                 "aria-describedby": "composer-help" });
    this.secure = h("input", { id: "secure", type: "checkbox", role: "switch",
                               "aria-describedby": "secure-hint" });
    this.switchBox = h("div", { class: "switch" },
      this.secure,
      h("label", { for: "secure" }, icon("lock"), "Secure Chat"));
    this.switchSlot = h("div", { class: "switch-slot" }, this.switchBox);
    this.segments = h("p", { id: "segments", class: "segments", "aria-live": "polite" });
    this.sendButton = h("button", { type: "submit", class: "primary send" }, "Send");
    this.warning = h("p", { id: "sms-warning", class: "sms-warning" },
      h("strong", {}, "SMS is not secure."),
      " Don't include health information; turn on Secure Chat for that.");
    this.secureNote = h("p", { id: "secure-hint", class: "secure-note" },
      icon("lock"),
      h("span", {}, h("strong", {}, "Secure Chat."),
        " Read on the secure page; the patient's text holds only a link."));
    this.optedOut = h("p", { id: "opted-out", class: "composer-note", hidden: true });
    this.unknownNote = h("p", { id: "unknown-number", class: "composer-note", hidden: true },
      "This number isn't linked to a patient record, so Secure Chat can't be used: "
      + "SMS only.");
    this.portalOff = h("p", { id: "portal-off", class: "composer-note", hidden: true },
      "Secure Chat needs the patient portal. Ask an administrator to turn it on.");
    this.heldAlert = new HeldDraftAlert({ onSendAsSms: () => this.sendHeldAsSms(),
                                          onDiscard: () => this.discardHeld() });
    this.el = h("form", { id: "composer", class: "composer", novalidate: true },
      this.heldAlert.el,
      this.warning,
      this.secureNote,
      this.optedOut,
      h("div", { class: "compose-box" },
        h("label", { for: "message", class: "visually-hidden" }, "Message"),
        this.input,
        h("div", { class: "compose-bar" },
          this.switchSlot,
          this.segments,
          h("p", { id: "composer-help", class: "composer-help" },
            "Enter to send · Shift+Enter for a new line"),
          this.sendButton)),
      this.unknownNote,
      this.portalOff);

    this.el.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.input.addEventListener("input", () => {
      this.heldAlert.textChanged();
      this.refresh();
      if (this.input.value) this.onTyping();
    });
    this.secure.addEventListener("change", () => this.refresh());
    this.refresh();
  }

  // The account's portal switch and the open conversation's patient.
  setState({ portalActive = this.portalActive, patient = this.patient } = {}) {
    this.portalActive = Boolean(portalActive);
    this.patient = patient || {};
    this.refresh();
  }

  get secureAllowed() {
    return this.portalActive && !this.patient.unknown;
  }

  get smsAllowed() {
    return !this.patient.opted_out;
  }

  // Why Secure Chat is unavailable now, in the held alert's words.
  get lostReason() {
    return this.portalActive ? "unknown" : "portal";
  }

  refresh() {
    const secureAllowed = this.secureAllowed;
    const drafted = this.input.value.trim() !== "";
    // The switch is about to go while on over a draft: hold it (before the switch, and
    // with it the channel the draft was written for, is forgotten below).
    if (!secureAllowed && this.switchBox.isConnected && this.secure.checked && drafted) {
      this.held = this.lostReason;
    }
    if (this.held && secureAllowed && drafted) this.secure.checked = true; // back to it
    if (this.held && (secureAllowed || !drafted)) this.held = null;
    // The switch exists only when Secure Chat can be used at all.
    if (secureAllowed && !this.switchBox.isConnected) this.switchSlot.append(this.switchBox);
    if (!secureAllowed && this.switchBox.isConnected) {
      if (this.secure === document.activeElement) this.input.focus();
      this.switchBox.remove();
      this.secure.checked = false;
    }
    // SMS refused (STOP): Secure Chat is the only way, so the switch is held on.
    const forced = secureAllowed && !this.smsAllowed;
    if (forced) this.secure.checked = true;
    this.secure.disabled = forced;
    const secure = secureAllowed && this.secure.checked;
    const canSend = secure || this.smsAllowed;

    this.el.dataset.mode = secure ? "secure" : "sms";
    this.el.toggleAttribute("data-held", Boolean(this.held));
    if (this.held) this.heldAlert.show(this.held, { smsAllowed: this.smsAllowed });
    else if (!this.heldAlert.el.hidden) this.heldAlert.hide();
    this.warning.hidden = secure || !this.smsAllowed || Boolean(this.held);
    this.secureNote.hidden = !secure;
    this.portalOff.hidden = this.portalActive;
    this.unknownNote.hidden = !(this.portalActive && this.patient.unknown);
    this.optedOut.hidden = this.smsAllowed;
    this.optedOut.textContent = this.smsAllowed ? "" : optedOutText(
      longDate(this.patient.opted_out_at), secureAllowed);
    this.input.disabled = !canSend;
    this.sendButton.disabled = !canSend;
    this.input.placeholder = !canSend ? "Messages can't be sent to this patient"
      : secure ? "Write a secure message…" : "Write an SMS…";

    const body = this.input.value;
    if (!secure && canSend && body) {
      this.segments.textContent = describe(count(body));
      this.segments.hidden = false;
    } else {
      this.segments.textContent = "";
      this.segments.hidden = true;
    }
  }

  submit() {
    if (this.held) {
      this.heldAlert.point();
      return;
    }
    this.deliver(this.secureAllowed && this.secure.checked);
  }

  deliver(secure) {
    const body = this.input.value.trim();
    if (!body || this.input.disabled) return;
    this.onSend(body, secure);
    this.input.value = "";
    this.secure.checked = false; // this message only
    this.held = null;
    this.refresh();
    this.input.focus();
  }

  // The held alert's second, confirming click: the draft (as it now reads) goes as SMS.
  sendHeldAsSms() {
    if (!this.held || !this.smsAllowed) return;
    this.held = null;
    this.deliver(false);
  }

  discardHeld() {
    this.clear();
    this.focus();
  }

  // A secure send of ours was refused because the portal is off (e.g. one queued while
  // offline, refused on reconnect): its text comes back here, held, when the box is
  // empty. Returns whether it did (if not, the refused item in the thread keeps it).
  holdRefused(body) {
    if (this.input.value.trim() || this.secureAllowed) return false;
    this.input.value = body;
    this.held = this.lostReason;
    this.refresh();
    return true;
  }

  clear() {
    this.input.value = "";
    this.secure.checked = false;
    this.held = null;
    this.refresh();
  }

  focus() {
    if (!this.input.disabled) this.input.focus();
  }
}

// What the composer says after STOP: when (in the reader's calendar, if known) and what
// it means for each channel (docs/protocol.md "Opt-out").
function optedOutText(date, secureAllowed) {
  const stop = date ? `Replied STOP on ${date}: no SMS` : "Replied STOP: no SMS";
  return secureAllowed
    ? `${stop}; secure messages cannot be announced by text.`
    : `${stop}, and Secure Chat is unavailable: nothing can be sent until they reply START.`;
}
