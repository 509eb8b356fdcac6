// The inbox: the account's conversations, newest first, kept live from `conversation`
// and `presence` frames; a filter by name; the "Add patient" form.
//
// Each row is one link (`#/c/<id>`) holding the name, the masked phone, the time of the
// last activity, an unread badge (`.unread`, its text the count, hidden at 0) and an
// online dot (`.online`, role=img "Online", hidden when the patient is not on the secure
// page). Patients made for an SMS from an unknown number, and patients who replied STOP,
// are marked.
import { h, initials, shortTime, fullTime } from "./dom.js";

const PAGE = 50;
const CLOCK_REFRESH_MS = 60000; // "Yesterday" becomes true at midnight, not at reload

export class Inbox {
  constructor({ api, onOpen }) {
    this.api = api;
    this.onOpen = onOpen;
    this.rows = new Map(); // conversation id -> { summary, li, refs }
    this.selected = null;
    this.hasMore = false;
    this.loading = false;
    this.build();
    this.clock = setInterval(() => this.refreshTimes(), CLOCK_REFRESH_MS);
  }

  destroy() {
    clearInterval(this.clock);
    this.rows.clear();
    this.el.replaceChildren();
  }

  build() {
    this.list = h("ul", { id: "inbox", class: "inbox-list", "aria-labelledby": "inbox-title" });
    this.filter = h("input", { id: "filter", type: "search", autocomplete: "off",
                               placeholder: "Search patients", spellcheck: "false" });
    this.filter.addEventListener("input", () => this.applyFilter());
    this.empty = h("p", { class: "inbox-empty", role: "status" });
    this.more = h("button", { type: "button", class: "secondary small-button", hidden: true,
                              onclick: () => this.loadMore() }, "Show older conversations");
    this.addButton = h("button", { type: "button", class: "secondary small-button",
                                   "aria-expanded": "false", "aria-controls": "add-patient",
                                   onclick: () => this.toggleAdd() }, "Add patient");
    this.addForm = this.buildAddForm();
    this.el = h("section", { class: "inbox-pane", "aria-labelledby": "inbox-title" },
      h("div", { class: "pane-head" },
        h("h2", { id: "inbox-title" }, "Inbox"),
        this.addButton),
      this.addForm,
      h("div", { class: "filter" },
        h("label", { for: "filter", class: "visually-hidden" }, "Filter by name"),
        this.filter),
      h("div", { class: "inbox-scroll" }, this.list, this.empty, this.more));
  }

  // --- loading ---------------------------------------------------------------------------

  async load({ background = false } = {}) {
    if (this.loading) return;
    this.loading = true;
    try {
      const answer = await this.api.get(`/api/conversations?limit=${PAGE}`, { background });
      for (const summary of answer.conversations) this.update(summary, { fromServer: true });
      if (!this.loadedOnce) this.hasMore = answer.conversations.length === PAGE;
      this.loadedOnce = true;
      this.error = "";
    } catch (exc) {
      if (exc.status === 401) return;
      this.error = exc.status === 0 ? "Offline: the inbox will refresh when the connection "
        + "is back." : `The inbox could not be loaded: ${exc.message}`;
    } finally {
      this.loading = false;
      this.render();
    }
  }

  async loadMore() {
    const oldest = [...this.rows.values()].map((r) => r.summary.last_activity_at).sort()[0];
    if (!oldest) return;
    this.more.disabled = true;
    try {
      const answer = await this.api.get(
        `/api/conversations?limit=${PAGE}&before=${encodeURIComponent(oldest)}`);
      for (const summary of answer.conversations) this.update(summary, { fromServer: true });
      this.hasMore = answer.conversations.length === PAGE;
    } catch (exc) {
      this.error = `Older conversations could not be loaded: ${exc.message}`;
    } finally {
      this.more.disabled = false;
      this.render();
    }
  }

  // --- live updates ----------------------------------------------------------------------

  // A summary from the list or a `conversation` frame. One describing an older state of
  // the conversation (lower last_seq) than the one shown changes nothing; a field the
  // server does not send (patient_online) keeps its value.
  update(summary, { fromServer = false } = {}) {
    let row = this.rows.get(summary.id);
    if (row && summary.last_seq < row.summary.last_seq) return;
    const merged = { ...(row ? row.summary : {}), ...summary };
    if (!("patient_online" in summary)) merged.patient_online = row?.summary.patient_online;
    if (!row) {
      row = this.row(merged);
      this.rows.set(summary.id, row);
    } else {
      row.summary = merged;
    }
    this.fill(row);
    if (!fromServer) this.render();
  }

  presence(conversationId, online) {
    const row = this.rows.get(conversationId);
    if (!row) return;
    row.summary.patient_online = online;
    this.fill(row);
  }

  get(conversationId) {
    return this.rows.get(conversationId)?.summary;
  }

  select(conversationId) {
    this.selected = conversationId;
    for (const [id, row] of this.rows) {
      const on = id === conversationId;
      row.li.classList.toggle("selected", on);
      if (on) row.link.setAttribute("aria-current", "page");
      else row.link.removeAttribute("aria-current");
    }
  }

  // --- rendering -------------------------------------------------------------------------

  row(summary) {
    const refs = {
      avatar: h("span", { class: "avatar", "aria-hidden": "true" }),
      name: h("span", { class: "name" }),
      online: h("span", { class: "online", role: "img", "aria-label": "Online",
                          title: "On the secure page now", hidden: true }),
      time: h("time", { class: "when" }),
      phone: h("span", { class: "phone" }),
      tags: h("span", { class: "tags" }),
      unread: h("span", { class: "unread", hidden: true }),
      unreadLabel: h("span", { class: "visually-hidden", hidden: true }, " unread"),
    };
    const link = h("a", { class: "row", href: `#/c/${encodeURIComponent(summary.id)}` },
      refs.avatar,
      h("span", { class: "row-main" },
        h("span", { class: "row-line" }, refs.name, refs.online, refs.time),
        h("span", { class: "row-line" }, refs.phone, refs.tags, refs.unread,
          refs.unreadLabel)));
    const li = h("li", { dataset: { conversationId: summary.id } }, link);
    return { summary, li, link, refs };
  }

  fill(row) {
    const { summary, refs, li } = row;
    const patient = summary.patient || {};
    const name = patient.display_name || "Unknown";
    if (refs.name.textContent !== name) refs.name.textContent = name;
    refs.avatar.textContent = patient.unknown ? "?" : initials(name);
    refs.phone.textContent = patient.masked_phone || "";
    refs.time.dateTime = summary.last_activity_at;
    refs.time.textContent = shortTime(summary.last_activity_at);
    refs.time.title = fullTime(summary.last_activity_at);
    refs.online.hidden = !summary.patient_online;
    const unread = summary.unread || 0;
    refs.unread.textContent = String(unread);
    refs.unread.hidden = unread === 0;
    refs.unreadLabel.hidden = unread === 0;
    li.classList.toggle("has-unread", unread > 0);
    const tags = [];
    if (patient.unknown) tags.push(h("span", { class: "tag tag-unknown" }, "Unknown number"));
    if (patient.opted_out) tags.push(h("span", { class: "tag tag-opted-out" }, "Opted out"));
    refs.tags.replaceChildren(...tags);
    li.classList.toggle("unknown", Boolean(patient.unknown));
    li.classList.toggle("opted-out", Boolean(patient.opted_out));
  }

  // Puts the rows in order (newest activity first) and shows what the filter lets through.
  // Moving a focused row would lose the focus, so it is given back.
  render() {
    const ordered = [...this.rows.values()].sort((a, b) =>
      b.summary.last_activity_at.localeCompare(a.summary.last_activity_at)
      || a.summary.id.localeCompare(b.summary.id));
    const current = [...this.list.children];
    if (ordered.some((row, i) => current[i] !== row.li) || current.length !== ordered.length) {
      const focused = this.list.contains(document.activeElement) ? document.activeElement
        : null;
      this.list.replaceChildren(...ordered.map((row) => row.li));
      if (focused) focused.focus({ preventScroll: true });
    }
    this.select(this.selected);
    this.applyFilter();
    this.more.hidden = !this.hasMore;
  }

  applyFilter() {
    const query = this.filter.value.trim().toLocaleLowerCase();
    let shown = 0;
    for (const row of this.rows.values()) {
      const name = (row.summary.patient?.display_name || "").toLocaleLowerCase();
      row.li.hidden = Boolean(query) && !name.includes(query);
      if (!row.li.hidden) shown += 1;
    }
    let text = "";
    if (this.error) text = this.error;
    else if (!this.rows.size && this.loadedOnce) {
      text = "No conversations yet. Add a patient to start one.";
    } else if (!shown && query) text = `No patient names match “${this.filter.value.trim()}”.`;
    this.empty.textContent = text;
    this.empty.hidden = !text;
  }

  refreshTimes() {
    for (const row of this.rows.values()) {
      row.refs.time.textContent = shortTime(row.summary.last_activity_at);
    }
  }

  // --- adding a patient ------------------------------------------------------------------

  buildAddForm() {
    const field = (id, label, input, hint) => h("div", { class: "field" },
      h("label", { for: id }, label),
      hint ? h("p", { id: `${id}-hint`, class: "hint" }, hint) : null,
      input);
    this.newName = h("input", { id: "new-name", name: "name", autocomplete: "off",
                                maxlength: "200", required: true });
    this.newPhone = h("input", { id: "new-phone", name: "phone", type: "tel",
                                 autocomplete: "off", maxlength: "32", required: true,
                                 "aria-describedby": "new-phone-hint" });
    this.newDob = h("input", { id: "new-dob", name: "date_of_birth", type: "date",
                               required: true, min: "1900-01-01" });
    this.addError = h("p", { id: "add-error", class: "error", role: "alert" });
    this.addSubmit = h("button", { type: "submit", class: "primary" }, "Add");
    const form = h("form", { id: "add-patient", class: "add-patient", hidden: true,
                             novalidate: true, "aria-labelledby": "add-title" },
      h("h3", { id: "add-title" }, "Add a patient"),
      field("new-name", "Name", this.newName),
      field("new-phone", "Phone", this.newPhone, "With area code, e.g. (415) 555-0100"),
      field("new-dob", "Date of birth", this.newDob),
      this.addError,
      h("div", { class: "actions" }, this.addSubmit,
        h("button", { type: "button", class: "secondary", onclick: () => this.toggleAdd(false) },
          "Cancel")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.addPatient();
    });
    return form;
  }

  toggleAdd(open = this.addForm.hidden) {
    this.addForm.hidden = !open;
    this.addButton.setAttribute("aria-expanded", String(open));
    if (open) this.newName.focus();
    else {
      this.addForm.reset();
      this.showAddError("", null);
      this.addButton.focus();
    }
  }

  showAddError(message, field) {
    for (const input of [this.newName, this.newPhone, this.newDob]) {
      input.removeAttribute("aria-invalid");
      input.setAttribute("aria-describedby",
                         input === this.newPhone ? "new-phone-hint" : "");
      if (!input.getAttribute("aria-describedby")) input.removeAttribute("aria-describedby");
    }
    this.addError.textContent = message;
    if (field) {
      field.setAttribute("aria-invalid", "true");
      const described = field === this.newPhone ? "new-phone-hint add-error" : "add-error";
      field.setAttribute("aria-describedby", described);
      field.focus();
    }
  }

  async addPatient() {
    const name = this.newName.value.trim();
    const phone = this.newPhone.value.trim();
    const dob = this.newDob.value;
    if (!name) return this.showAddError("Enter the patient's name.", this.newName);
    if (!phone) return this.showAddError("Enter the patient's mobile phone number.",
                                         this.newPhone);
    if (!/^\d{4}-\d{2}-\d{2}$/.test(dob)) {
      return this.showAddError("Enter the date of birth as month, day and year.",
                               this.newDob);
    }
    this.showAddError("", null);
    this.addSubmit.disabled = true;
    try {
      const answer = await this.api.post("/api/patients",
                                         { name, phone, date_of_birth: dob });
      const id = answer.conversation_id;
      if (!this.rows.has(id)) {
        this.update({ id, patient: answer.patient, last_activity_at: new Date().toISOString(),
                      last_seq: 0, unread: 0, patient_online: false });
      }
      this.toggleAdd(false);
      this.onOpen(id);
    } catch (exc) {
      const [message, field] = this.addErrorFor(exc);
      this.showAddError(message, field);
    } finally {
      this.addSubmit.disabled = false;
    }
  }

  addErrorFor(exc) {
    if (exc.code === "conflict") {
      return ["A patient with this phone number already exists. Find them in the inbox.",
              this.newPhone];
    }
    if (exc.code === "invalid_request") {
      const fieldName = exc.message.split(":")[0].trim();
      if (fieldName === "phone") {
        return ["That is not a valid mobile number. Include the area code, "
                + "e.g. (415) 555-0100.", this.newPhone];
      }
      if (fieldName === "date_of_birth") {
        return ["That date of birth is not possible: it must be a real date between "
                + "1900 and today.", this.newDob];
      }
      if (fieldName === "name") return ["Enter the patient's name.", this.newName];
    }
    return [`The patient could not be added: ${exc.message}`, null];
  }
}
