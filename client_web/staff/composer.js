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
import { h, icon } from "./dom.js";
import { count, describe } from "./segments.js";

export class Composer {
  constructor({ onSend, onTyping }) {
    this.onSend = onSend;
    this.onTyping = onTyping;
    this.portalActive = false;
    this.patient = {};
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
    this.el = h("form", { id: "composer", class: "composer", novalidate: true },
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

  refresh() {
    const secureAllowed = this.secureAllowed;
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
    this.warning.hidden = secure || !this.smsAllowed;
    this.secureNote.hidden = !secure;
    this.portalOff.hidden = this.portalActive;
    this.unknownNote.hidden = !(this.portalActive && this.patient.unknown);
    this.optedOut.hidden = this.smsAllowed;
    this.optedOut.textContent = this.smsAllowed ? "" : (
      "SMS is off: this patient replied STOP to our texts. " + (secureAllowed
        ? "Secure Chat still works, but no text will tell them about a new message."
        : "Nothing can be sent to them until they reply START."));
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
    const body = this.input.value.trim();
    if (!body || this.input.disabled) return;
    const secure = this.secureAllowed && this.secure.checked;
    this.onSend(body, secure);
    this.input.value = "";
    this.secure.checked = false; // this message only
    this.refresh();
    this.input.focus();
  }

  clear() {
    this.input.value = "";
    this.secure.checked = false;
    this.refresh();
  }

  focus() {
    if (!this.input.disabled) this.input.focus();
  }
}
