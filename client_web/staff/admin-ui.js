// Small DOM helpers shared by the admin pages: building elements, labelled fields with
// hints, errors shown next to the field they are about, and confirmation dialogs.
// Everything is built with DOM calls (no innerHTML, no inline style): the console runs
// under a CSP without 'unsafe-inline', and every value shown came from the server.

import { h as domH } from "./dom.js";

let uid = 0;

/** A fresh id for tying labels, hints and errors to their control. */
export function newId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** dom.js's h, plus a `text` prop for an element whose only child is text. */
export function h(tag, { text = null, ...props } = {}, ...children) {
  return domH(tag, props, text, ...children);
}

/**
 * A labelled control with an optional hint under the label. Returns {wrap, input}.
 * `control` is the element (input/select) to label; `switch` puts the control before
 * its label, as toggles read best.
 */
export function field(label, control, { hint = null, toggle = false } = {}) {
  if (!control.id) control.id = newId("f");
  const labelEl = h("label", { for: control.id, text: label });
  const parts = [];
  let hintEl = null;
  if (hint) {
    hintEl = h("p", { class: "admin-hint", id: `${control.id}-hint` }, hint);
    describe(control, hintEl.id);
  }
  if (toggle) {
    parts.push(h("div", { class: "admin-toggle" }, control, labelEl));
  } else {
    parts.push(labelEl, control);
  }
  if (hintEl) parts.push(hintEl);
  const wrap = h("div", { class: toggle ? "admin-field admin-field-toggle" : "admin-field" },
                 parts);
  return { wrap, input: control };
}

function describe(control, id) {
  const ids = (control.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
  if (!ids.includes(id)) ids.push(id);
  control.setAttribute("aria-describedby", ids.join(" "));
}

function undescribe(control, id) {
  const ids = (control.getAttribute("aria-describedby") || "").split(" ")
    .filter((x) => x && x !== id);
  if (ids.length) control.setAttribute("aria-describedby", ids.join(" "));
  else control.removeAttribute("aria-describedby");
}

// "sms_number: not a valid phone number" → "Not a valid phone number." (shown next to
// the field, the field's name is redundant).
function tidy(message) {
  const text = String(message || "").replace(/^[a-z_]+:\s*/, "").trim();
  if (!text) return "Something went wrong. Please try again.";
  const sentence = text[0].toUpperCase() + text.slice(1);
  return /[.!?]$/.test(sentence) ? sentence : `${sentence}.`;
}

/**
 * Errors of one form: `fields` maps the server's field names to their controls. An error
 * is shown in a role=alert paragraph right after the field it names (the control gets
 * aria-invalid and aria-describedby), or above the buttons when it names none.
 */
export class FormErrors {
  constructor(form, fields, generalSlot) {
    this.form = form;
    this.fields = fields;
    this.generalSlot = generalSlot; // the element the general alert goes before
    this.shown = [];
  }

  clear() {
    for (const { el, control } of this.shown) {
      el.remove();
      if (control) {
        control.removeAttribute("aria-invalid");
        undescribe(control, el.id);
      }
    }
    this.shown = [];
  }

  /** Show `message` next to field `key` (or as a general error when key is null). */
  show(key, message) {
    const control = key ? this.fields[key] : null;
    const el = h("p", { class: "admin-error", role: "alert" });
    if (!control) {
      el.id = newId("error");
      el.textContent = String(message);
      this.generalSlot.before(el);
      this.shown.push({ el, control: null });
      return el;
    }
    el.id = `${control.id}-error`;
    el.textContent = tidy(message);
    const wrap = control.closest(".admin-field") || control;
    wrap.append(el);
    control.setAttribute("aria-invalid", "true");
    describe(control, el.id);
    this.shown.push({ el, control });
    return el;
  }

  /** The field a server message names: "field: …" first, else a field named in it. */
  fieldOf(message) {
    const text = String(message || "");
    const prefix = /^([a-z_]+):/.exec(text);
    if (prefix && prefix[1] in this.fields) return prefix[1];
    const lower = text.toLowerCase();
    return Object.keys(this.fields).find((key) =>
      new RegExp(`\\b${key.replace(/_/g, "[ _]")}\\b`).test(lower)) || null;
  }

  /** Show an ApiError (or any error): next to its field when it names one. */
  fromApi(error) {
    const message = error?.message || "The request failed. Please try again.";
    const known = ["invalid_request", "conflict"].includes(error?.code);
    const key = known ? this.fieldOf(message) : null;
    const el = this.show(key, key ? message : general(error));
    if (key) this.fields[key].focus();
    return el;
  }

  /** Focus the first invalid control (after client-side checks). */
  focusFirst() {
    const first = this.shown.find((s) => s.control);
    if (first) first.control.focus();
  }
}

/** A sentence for an error that names no field. */
export function general(error) {
  if (!error) return "The request failed. Please try again.";
  switch (error.code) {
    case "forbidden":
      return "Only administrators can do this.";
    case "unauthenticated":
      return "Your session has ended. Please sign in again.";
    case "rate_limited":
      return "Too many requests. Please wait a moment and try again.";
    case "unavailable":
      return "The service is busy. Please try again in a moment.";
    default:
      return tidy(error.message || "The request failed. Please try again.");
  }
}

/**
 * A modal confirmation (`<dialog>`): resolves true when `confirm` was chosen, false on
 * Cancel or Escape. Focus starts on Cancel (the safe choice) and returns to whatever had
 * it before.
 */
export function confirmDialog({ title, body, confirm, cancel = "Cancel", danger = true }) {
  const titleId = newId("dialog-title");
  const bodyId = newId("dialog-body");
  const cancelButton = h("button", { type: "submit", value: "cancel", class: "admin-secondary",
                                     text: cancel, autofocus: true });
  const confirmButton = h("button", { type: "submit", value: "confirm",
                                      class: danger ? "admin-danger" : "", text: confirm });
  const dialog = h("dialog", { class: "admin-dialog", "aria-labelledby": titleId,
                               "aria-describedby": bodyId },
    h("form", { method: "dialog" },
      h("h2", { id: titleId, text: title }),
      h("div", { id: bodyId, class: "admin-dialog-body" },
        (Array.isArray(body) ? body : [body]).map((p) => h("p", {}, p))),
      h("div", { class: "admin-actions" }, confirmButton, cancelButton)));
  const opener = document.activeElement;
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "confirm";
      dialog.remove();
      if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
      resolve(ok);
    }, { once: true });
    dialog.showModal();
    cancelButton.focus();
  });
}

/** "2026-01-01T09:00:00.000000Z" → [local date, local time with seconds]. */
export function formatTime(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return [iso || "", ""];
  return [
    when.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" }),
    when.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" }),
  ];
}

/** The first 8 characters of a UUID: enough to tell rows apart on screen. */
export function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}
