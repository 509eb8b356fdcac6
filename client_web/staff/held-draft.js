// The alert above the composer for a held draft: one written with Secure Chat on whose
// channel went away before it was sent (the portal turned off, the patient no longer
// verifiable, a refused secure send). Such a draft must never leave as SMS by the same
// Enter that would have sent it securely, so the composer holds it and this alert says
// why and offers the only ways on:
// * "Send as SMS instead…", then a second, separate "Yes, send as plain SMS". A double
//   click or a repeated Enter cannot confirm by accident: the second step's buttons
//   ignore the later clicks of a multi-click (`event.detail > 1`, the gesture began
//   before they existed), "Cancel" comes first, as wide as the first button, and takes
//   the focus. Any change to the text takes the confirmation back (it was given for the
//   text as it was).
// * "Discard the draft" (or emptying the box by hand): what is typed next is a new draft.
// Secure Chat coming back lifts the hold; the composer decides that, not this alert.
import { h } from "./dom.js";

const WHY = {
  portal: "the patient portal was turned off",
  unknown: "this number is no longer linked to a patient record",
};

// A click handler that ignores the second and later clicks of a double (triple) click;
// keyboard activation (detail 0) and single clicks pass.
function single(handler) {
  return (event) => {
    if (event.detail <= 1) handler();
  };
}

export class HeldDraftAlert {
  constructor({ onSendAsSms, onDiscard }) {
    this.reason = null;
    this.why = h("p", { class: "held-why" });
    this.advice = h("p", { class: "held-advice" });
    this.ask = h("button", { type: "button", class: "secondary small-button held-first",
                             onclick: () => this.confirmStep() }, "Send as SMS instead…");
    this.discard = h("button", { type: "button", class: "link",
                                 onclick: () => onDiscard() }, "Discard the draft");
    this.firstStep = h("div", { class: "actions" }, this.ask, this.discard);
    this.question = h("p", { class: "held-question" },
      h("strong", {}, "Send it as a plain SMS?"),
      " Anyone who sees the patient's phone can read it.");
    this.cancel = h("button", { type: "button", class: "secondary small-button held-first",
                                onclick: single(() => this.firstStepAgain({ focus: true })) },
                    "Cancel");
    this.confirm = h("button", { type: "button", class: "danger small-button",
                                 onclick: single(onSendAsSms) }, "Yes, send as plain SMS");
    this.secondStep = h("div", { class: "held-confirm", hidden: true },
      this.question, h("div", { class: "actions" }, this.cancel, this.confirm));
    this.el = h("div", { id: "held-draft", class: "held-draft", role: "alert", hidden: true },
      this.why, this.advice, this.firstStep, this.secondStep);
  }

  get confirming() {
    return !this.secondStep.hidden;
  }

  // Shown (or kept) for `reason`; the texts change only when what they say does, so a
  // screen reader is not told the same alert again on every keystroke.
  show(reason, { smsAllowed }) {
    const why = `This message was written for Secure Chat, which is no longer available `
      + `(${WHY[reason] || WHY.portal}). It has not been sent.`;
    const advice = smsAllowed
      ? "Send it as SMS only if it holds no health information, or discard it. "
        + "If Secure Chat comes back, it goes back to Secure Chat."
      : "SMS is off for this patient too, so it cannot be sent now.";
    if (this.why.textContent !== why) this.why.textContent = why;
    if (this.advice.textContent !== advice) this.advice.textContent = advice;
    this.ask.hidden = !smsAllowed;
    if (!smsAllowed) this.firstStepAgain();
    this.reason = reason;
    this.el.hidden = false;
  }

  hide() {
    this.reason = null;
    this.el.hidden = true;
    delete this.el.dataset.nudged;
    this.firstStepAgain();
  }

  // The text changed: a confirmation given for the old text does not hold.
  textChanged() {
    if (this.confirming) this.firstStepAgain();
  }

  // Enter or Send while held: nothing is sent; the choice is marked and focused.
  point() {
    this.el.dataset.nudged = "";
    (this.confirming ? this.cancel : this.ask.hidden ? this.discard : this.ask).focus();
  }

  confirmStep() {
    this.firstStep.hidden = true;
    this.secondStep.hidden = false;
    this.cancel.focus();
  }

  firstStepAgain({ focus = false } = {}) {
    const wasConfirming = this.confirming;
    this.secondStep.hidden = true;
    this.firstStep.hidden = false;
    if (focus && wasConfirming) this.ask.focus();
  }
}
