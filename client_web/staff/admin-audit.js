// The audit log (admins): filters (action, staff member, patient, a date range), newest
// first, "Load more" by position (before_seq), and "Export CSV": a plain link to the same
// filters with format=csv, so the browser downloads it with the session cookie.
// Staff and patients are picked by name, and only their ids are sent: a search is itself
// audited, so a name never goes into the query (the server refuses anything but an id).
// Names come from the staff list and the inbox, as the console shows them elsewhere.
// Dates are the viewer's local days, sent as RFC 3339 UTC instants; the server's `until`
// is exclusive, so "To" sends the start of the next day.
import { FormErrors, field, formatTime, general, h, shortId } from "./admin-ui.js";

const PAGE = 100; // the server's default page (GET /api/audit limit 1–1000)
// Patients offered by name: the inbox, newest first, 200 a page (its largest), up to
// this many pages. A clinic with more finds its older patients by their newest activity.
const PATIENT_PAGES = 5;
// The actions the server writes today (grep `action=` in server/), offered as
// suggestions; the field takes any text.
const ACTIONS = [
  "account.created", "account.settings_changed", "audit.chain_keyed", "audit.exported",
  "audit.legacy_anchored", "audit.read",
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

/** The account's patients as [{id, conversationId, label}], labels unique (a repeated
 * name gets its masked phone). Fewer, or none, when the inbox cannot be read. */
async function loadPatients(api) {
  const seen = [];
  let before = null;
  try {
    for (let n = 0; n < PATIENT_PAGES; n += 1) {
      const query = new URLSearchParams({ limit: "200" });
      if (before) query.set("before", before);
      const page = (await api.get(`/api/conversations?${query}`)).conversations || [];
      seen.push(...page);
      if (page.length < 200) break;
      before = page[page.length - 1].last_activity_at;
    }
  } catch {
    // The other filters still work; the field says it has no names to offer.
  }
  const counts = new Map();
  for (const { patient } of seen) {
    counts.set(patient.display_name, (counts.get(patient.display_name) || 0) + 1);
  }
  return seen.map((c) => ({
    id: c.patient.id, conversationId: c.id,
    label: counts.get(c.patient.display_name) > 1
      ? `${c.patient.display_name} (${c.patient.masked_phone})` : c.patient.display_name,
  }));
}

export async function showAudit(root, { api }) {
  // Names for the actor and object columns; the lists are admin-only, as is this page.
  const names = new Map();
  let staffList = [];
  const [staffAnswer, patients] = await Promise.all([
    api.get("/api/staff").catch(() => null), loadPatients(api)]);
  staffList = staffAnswer?.staff || []; // without it, ids alone still identify the actor
  for (const member of staffList) names.set(member.id, member.name);
  const patientByLabel = new Map();
  for (const p of patients) {
    names.set(p.id, p.label);
    names.set(p.conversationId, p.label);
    patientByLabel.set(p.label, p.id);
  }
  if (!root.isConnected) return;

  const action = h("input", { type: "text", id: "audit-action", list: "audit-actions",
                              autocomplete: "off", spellcheck: "false",
                              placeholder: "e.g. auth.login" });
  const actor = h("select", { id: "audit-actor" },
    h("option", { value: "", text: "Anyone" }),
    staffList.map((m) => h("option", { value: m.id,
                                       text: m.active ? m.name : `${m.name} (deactivated)` })));
  const patient = h("input", { type: "text", id: "audit-patient", list: "audit-patients",
                               autocomplete: "off", spellcheck: "false",
                               placeholder: patients.length ? "Any patient" : "" });
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
    h("datalist", { id: "audit-patients" },
      patients.map((p) => h("option", { value: p.label }))),
    h("div", { class: "admin-grid admin-grid-filters" },
      field("Action", action).wrap,
      field("Staff member", actor).wrap,
      field("Patient", patient, {
        hint: patients.length ? "Type a name and pick it from the list."
                              : "No patients could be listed.",
      }).wrap,
      field("From", from).wrap,
      field("To", to, { hint: "Inclusive." }).wrap),
    actions);
  const errors = new FormErrors(form, { action, actor_id: actor, patient_id: patient,
                                        since: from, until: to }, actions);

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
    if (actor.value) params.set("actor_id", actor.value);
    const name = patient.value.trim();
    if (name && patientByLabel.has(name)) params.set("patient_id", patientByLabel.get(name));
    else if (name) errors.show("patient_id", "Pick a patient from the list.");
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
    // Whom the entry is about: its object, or the conversation its details name.
    const about = names.get(entry.object_id) || names.get(conversationOf(entry.details));
    const objectCell = h("td", {},
      entry.object_type ? h("span", { text: entry.object_type }) : h("span", { text: "—" }),
      about ? h("span", { class: "admin-strong admin-about", text: about }) : null,
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

/** The conversation_id an entry's details name, if any. */
function conversationOf(raw) {
  try {
    return (typeof raw === "string" ? JSON.parse(raw) : raw)?.conversation_id;
  } catch {
    return undefined;
  }
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
