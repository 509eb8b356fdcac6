// Small DOM helpers for the console. Text only ever becomes text nodes (never HTML), so
// a message or a name can hold markup and it shows as typed.

// h("button", { type: "submit", class: "primary", onclick: fn }, "Send")
// Props: `class`, `dataset` (object), `on<event>` (listener), `hidden`/boolean props, and
// anything else as an attribute. Children: nodes, strings, numbers; null/false skipped.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

const SVG = "http://www.w3.org/2000/svg";
const ICONS = {
  // A padlock: Secure Chat.
  lock: ["M7 10V7a5 5 0 0 1 10 0v3", "M5 10h14v11H5z"],
  // A speech bubble: SMS.
  sms: ["M4 5h16v11H9l-5 4z"],
};

// A decorative icon (the text beside it carries the meaning).
export function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.classList.add("icon", `icon-${name}`);
  for (const d of ICONS[name]) {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

// "9:05 AM" today, "Yesterday", "Mon" this week, "Mar 4" this year, else "3/4/2025".
export function shortTime(iso, now = new Date()) {
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return "";
  const day = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((day(now) - day(moment)) / 86400000);
  if (days <= 0) return moment.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  if (days === 1) return "Yesterday";
  if (days < 7) return moment.toLocaleDateString([], { weekday: "short" });
  if (moment.getFullYear() === now.getFullYear()) {
    return moment.toLocaleDateString([], { month: "short", day: "numeric" });
  }
  return moment.toLocaleDateString([], { year: "numeric", month: "numeric", day: "numeric" });
}

// The time of a message: "9:05 AM" today, else "Mar 4, 9:05 AM".
export function messageTime(iso, now = new Date()) {
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return "";
  const today = moment.toDateString() === now.toDateString();
  return moment.toLocaleString([], today
    ? { hour: "numeric", minute: "2-digit" }
    : { month: "short", day: "numeric", hour: "numeric", minute: "2-digit",
        year: moment.getFullYear() === now.getFullYear() ? undefined : "numeric" });
}

// The full date and time, for a tooltip.
export function fullTime(iso) {
  const moment = new Date(iso);
  return Number.isNaN(moment.getTime()) ? "" : moment.toLocaleString([], {
    dateStyle: "full", timeStyle: "short" });
}

// A day in the reader's own calendar: "December 3, 2026" (en-US). Empty when unknown.
export function longDate(iso) {
  const moment = new Date(iso);
  return !iso || Number.isNaN(moment.getTime()) ? "" : moment.toLocaleDateString([], {
    year: "numeric", month: "long", day: "numeric" });
}

// "15 minutes", "1 minute", "6 seconds".
export function duration(seconds) {
  if (seconds >= 60 && seconds % 60 === 0) {
    const minutes = seconds / 60;
    return `${minutes} minute${minutes === 1 ? "" : "s"}`;
  }
  return `${seconds} second${seconds === 1 ? "" : "s"}`;
}

// "Nurse Kim" -> "NK": the avatar of an inbox row.
export function initials(name) {
  const words = String(name || "").trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : words;
  return letters.map((w) => [...w][0].toUpperCase()).join("") || "?";
}
