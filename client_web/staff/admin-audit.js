// The audit log (admins): filters (action, staff member, a date range), newest first,
// "Load more" by position (before_seq), and "Export CSV": a plain link to the same
// filters with format=csv, so the browser downloads it with the session cookie.
// Dates are the viewer's local days, sent as RFC 3339 UTC instants; the server's `until`
// is exclusive, so "To" sends the start of the next day.
import { FormErrors, field, formatTime, general, h, shortId } from "./admin-ui.js";

const PAGE = 100; // the server's default page (GET /api/audit limit 1–1000)
// The actions the server writes today (grep `action=` in server/), offered as
// suggestions; the field takes any text.
const ACTIONS = [
  "account.created", "account.settings_changed", "audit.exported", "audit.read",
  "auth.login", "auth.logout", "conversation.history_read", "conversation.subscribed",
  "integrity.decrypt_failed", "key.rotated", "link.code_sent", "link.locked",
  "link.revoked", "link.verified", "message.sent", "patient.created", "patient.opted_out",
  "patient.session_ended", "patient.session_opened", "sms.received", "staff.created",
  "staff.deactivated", "staff.password_reset",
];

/** "2026-01-31" (a local day) → its first instant as RFC 3339 UTC; `next` the day after. */
export function dayStart(value, next = false) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || "");
  if (!match) return null;
  const day = new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3]) + (next ? 1 : 0));
  return Number.isNaN(day.getTime()) ? null : day.toISOString();
}

export async function showAudit(root, { api }) {
  // Names for the actor column; the list is admin-only, as is this page.
  const names = new Map();
  let staffList = [];
  try {
    staffList = (await api.get("/api/staff")).staff || [];
    for (const member of staffList) names.set(member.id, member.name);
  } catch {
    // Ids alone still identify the actor.
  }
  if (!root.isConnected) return;

  const action = h("input", { type: "text", id: "audit-action", list: "audit-actions",
                              autocomplete: "off", spellcheck: "false",
                              placeholder: "e.g. auth.login" });
  const actor = h("input", { type: "text", id: "audit-actor", list: "audit-staff",
                             autocomplete: "off", spellcheck: "false" });
  const from = h("input", { type: "date", id: "audit-from" });
  const to = h("input", { type: "date", id: "audit-to" });
  const apply = h("button", { type: "submit", class: "admin-primary", text: "Apply" });
  const exportLink = h("a", { href: "/api/audit?format=csv", id: "audit-export",
                              class: "admin-button-link", download: "audit.csv",
                              text: "Export CSV" });
  const actions = h("div", { class: "admin-actions" }, apply, exportLink);
  const form = h("form", { class: "admin-card admin-filters", id: "audit-filters",
                           novalidate: true, "aria-label": "Filter the audit log" },
    h("datalist", { id: "audit-actions" }, ACTIONS.map((a) => h("option", { value: a }))),
    h("datalist", { id: "audit-staff" },
      staffList.map((m) => h("option", { value: m.id, label: m.name }))),
    h("div", { class: "admin-grid admin-grid-4" },
      field("Action", action).wrap,
      field("Staff member id", actor, { hint: "Type a name to pick from the list." }).wrap,
      field("From", from).wrap,
      field("To", to, { hint: "Inclusive." }).wrap),
    actions);
  const errors = new FormErrors(form, { action, actor_id: actor, since: from, until: to },
                                actions);

  const summary = h("p", { class: "admin-status", role: "status", id: "audit-status" });
  const tbody = h("tbody");
  const table = h("table", { class: "admin-table admin-audit", id: "audit-table" },
    h("caption", { class: "visually-hidden", text: "Audit log entries, newest first" }),
    h("thead", {}, h("tr", {},
      ["Time", "Actor", "Action and details", "Object", "Outcome", "IP"]
        .map((t) => h("th", { scope: "col", text: t })))),
    tbody);
  const more = h("button", { type: "button", class: "admin-secondary", id: "audit-more",
                             text: "Load more", hidden: true });
  root.append(form,
    h("section", { class: "admin-card", "aria-labelledby": "audit-list-title" },
      h("div", { class: "admin-card-head" },
        h("h2", { id: "audit-list-title", text: "Entries" }), summary),
      h("div", { class: "admin-scroll", role: "region", tabindex: "0",
                 "aria-label": "Audit log table" }, table),
      h("div", { class: "admin-actions admin-more" }, more)));

  let query = new URLSearchParams();
  let lastSeq = null;
  let shown = 0;
  let loading = false;

  function filters() {
    const params = new URLSearchParams();
    if (action.value.trim()) params.set("action", action.value.trim());
    if (actor.value.trim()) params.set("actor_id", actor.value.trim());
    const since = dayStart(from.value);
    const until = dayStart(to.value, true);
    if (from.value && !since) errors.show("since", "Enter a date.");
    if (to.value && !until) errors.show("until", "Enter a date.");
    if (since && until && since >= until) {
      errors.show("until", "The end date is before the start date.");
    }
    if (since) params.set("since", since);
    if (until) params.set("until", until);
    return params;
  }

  async function load(reset) {
    if (loading) return;
    loading = true;
    more.setAttribute("aria-disabled", "true");
    const params = new URLSearchParams(query);
    params.set("limit", String(PAGE));
    if (!reset && lastSeq !== null) params.set("before_seq", String(lastSeq));
    summary.textContent = "Loading…";
    try {
      const page = await api.get(`/api/audit?${params}`);
      if (!root.isConnected) return;
      if (reset) {
        tbody.replaceChildren();
        shown = 0;
      }
      tbody.append(...page.entries.map(row));
      shown += page.entries.length;
      if (page.entries.length) lastSeq = page.entries[page.entries.length - 1].seq;
      more.hidden = !page.has_more;
      if (!shown) {
        tbody.append(h("tr", {}, h("td", { colspan: "6", class: "admin-empty",
                                          text: "No entries match these filters." })));
      }
      summary.textContent = shown ? `Showing ${shown} ${shown === 1 ? "entry" : "entries"}` +
        (page.has_more ? ", newest first. More are available." : ", newest first.") : "";
    } catch (error) {
      summary.textContent = "";
      errors.fromApi(error);
    } finally {
      loading = false;
      more.removeAttribute("aria-disabled");
    }
  }

  function row(entry) {
    const who = entry.actor_id ? names.get(entry.actor_id) : null;
    const actorCell = h("td", {},
      who ? h("span", { class: "admin-strong", text: who }) : h("span", { text: entry.actor_kind }),
      entry.actor_id ? h("code", { class: "admin-id", title: entry.actor_id,
                                   text: shortId(entry.actor_id) }) : null);
    const objectCell = h("td", {},
      entry.object_type ? h("span", { text: entry.object_type }) : h("span", { text: "—" }),
      entry.object_id ? h("code", { class: "admin-id", title: entry.object_id,
                                    text: shortId(entry.object_id) }) : null);
    const good = entry.outcome === "ok";
    const [day, time] = formatTime(entry.ts);
    const extra = details(entry.details);
    return h("tr", { "data-seq": entry.seq },
      h("td", {}, h("time", { datetime: entry.ts, title: entry.ts },
        h("span", { class: "admin-day", text: day }), " ",
        h("span", { class: "admin-time", text: time }))),
      actorCell,
      h("td", {}, h("code", { class: "admin-action", text: entry.action }),
        extra ? h("span", { class: "admin-details", text: extra }) : null),
      objectCell,
      h("td", {}, h("span", { class: `admin-badge ${good ? "is-on" : "is-off"}`,
                              text: entry.outcome })),
      h("td", { class: "admin-ip", text: entry.ip || "—" }));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    errors.clear();
    const params = filters();
    if (errors.shown.length) {
      errors.focusFirst();
      return;
    }
    query = params;
    lastSeq = null;
    const csv = new URLSearchParams(params);
    csv.set("format", "csv");
    exportLink.href = `/api/audit?${csv}`;
    load(true);
  });
  more.addEventListener("click", () => load(false));

  await load(true);
}

/** The entry's details (canonical JSON of a flat map) as "key: value · key: value". */
export function details(raw) {
  let parsed = raw;
  if (typeof raw === "string") {
    try {
      parsed = JSON.parse(raw);
    } catch {
      return raw;
    }
  }
  if (!parsed || typeof parsed !== "object") return parsed == null ? "" : String(parsed);
  const parts = Object.entries(parsed).map(([k, v]) => `${k}: ${v}`);
  return parts.length ? parts.join(" · ") : "";
}
