// Staff members (admins): the list (name, email, role, status), a form to add one with a
// temporary password, and Deactivate (confirmed in a dialog), which ends their sessions
// and closes their open consoles. Nobody can deactivate themselves, so your own row has
// no button.
import { FormErrors, confirmDialog, field, general, h } from "./admin-ui.js";

// server/passwords.py: NIST SP 800-63B-4, at least 15 characters, no composition rules.
const MIN_PASSWORD_CHARS = 15;
const ROLE_NAMES = { admin: "Administrator", staff: "Staff" };

export async function showStaff(root, { api, me }) {
  const myId = me?.staff?.id;
  const status = h("p", { class: "admin-status", role: "status", id: "staff-status",
                          tabindex: "-1" });
  const loading = h("p", { class: "admin-muted", text: "Loading staff…" });
  root.append(loading);

  let members;
  try {
    members = (await api.get("/api/staff")).staff;
  } catch (error) {
    loading.replaceWith(h("p", { class: "admin-error", role: "alert", text: general(error) }));
    return;
  }
  if (!root.isConnected) return;

  const tbody = h("tbody");
  const table = h("table", { class: "admin-table", id: "staff-table" },
    h("caption", { class: "visually-hidden", text: "Staff members" }),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col", text: "Name" }),
      h("th", { scope: "col", text: "Email" }),
      h("th", { scope: "col", text: "Role" }),
      h("th", { scope: "col", text: "Status" }),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden", text: "Actions" })))),
    tbody);

  function render() {
    tbody.replaceChildren(...members.map(row));
  }

  function row(member) {
    const you = member.id === myId;
    const name = h("td", { class: "admin-strong" }, member.name,
                   you ? h("span", { class: "admin-tag", text: "You" }) : null);
    let action = null;
    if (member.active && !you) {
      action = h("button", { type: "button", class: "admin-secondary admin-small",
                             "aria-label": `Deactivate ${member.name}`, text: "Deactivate",
                             onclick: () => deactivate(member) });
    }
    return h("tr", { "data-staff-id": member.id, class: member.active ? "" : "admin-inactive" },
      name,
      h("td", { class: "admin-break", text: member.email }),
      h("td", { text: ROLE_NAMES[member.role] || member.role }),
      h("td", {}, h("span", { class: `admin-badge ${member.active ? "is-on" : "is-off"}`,
                              text: member.active ? "Active" : "Deactivated" })),
      h("td", { class: "admin-cell-action" }, action));
  }

  async function deactivate(member) {
    const ok = await confirmDialog({
      title: `Deactivate ${member.name}?`,
      body: [
        "They are signed out at once on every device and can no longer sign in.",
        "Their messages and the audit log keep their name. This cannot be undone here.",
      ],
      confirm: "Deactivate",
    });
    if (!ok || !root.isConnected) return;
    status.textContent = `Deactivating ${member.name}…`;
    try {
      const answer = await api.post(`/api/staff/${encodeURIComponent(member.id)}/deactivate`,
                                    {});
      const updated = answer.staff || { ...member, active: false };
      members = members.map((m) => (m.id === member.id ? { ...m, ...updated } : m));
      render();
      const ended = answer.ended_sessions ?? 0;
      status.textContent = `${member.name} was deactivated` +
        (ended ? ` and signed out of ${ended} session${ended === 1 ? "" : "s"}.` : ".");
    } catch (error) {
      status.textContent = `${member.name} was not deactivated: ${general(error)}`;
    }
    // The row's button is gone: keep the keyboard user at the outcome.
    status.focus();
  }

  // --- add a member ----------------------------------------------------------------------
  const name = h("input", { type: "text", id: "staff-name", required: true,
                            autocomplete: "off", maxlength: 200 });
  const email = h("input", { type: "email", id: "staff-email", required: true,
                             autocomplete: "off", spellcheck: "false" });
  const role = h("select", { id: "staff-role" },
    h("option", { value: "staff", text: "Staff" }),
    h("option", { value: "admin", text: "Administrator" }));
  const password = h("input", { type: "password", id: "staff-password", required: true,
                                autocomplete: "new-password",
                                minlength: MIN_PASSWORD_CHARS });
  const add = h("button", { type: "submit", class: "admin-primary", text: "Add staff member" });
  const addStatus = h("p", { class: "admin-status", role: "status", id: "staff-add-status" });
  const addActions = h("div", { class: "admin-actions" }, add, addStatus);
  const form = h("form", { class: "admin-card admin-form", id: "staff-form", novalidate: true,
                           "aria-labelledby": "staff-add-title" },
    h("h2", { id: "staff-add-title", text: "Add a staff member" }),
    h("div", { class: "admin-grid" },
      field("Name", name).wrap,
      field("Email", email, { hint: "They sign in with this address." }).wrap,
      field("Role", role, {
        hint: "Administrators can also change settings, manage staff and read the audit log.",
      }).wrap,
      field("Temporary password", password, {
        hint: `At least ${MIN_PASSWORD_CHARS} characters; a few random words work well. ` +
              "Give it to them in person, never by email or text.",
      }).wrap),
    addActions);
  const errors = new FormErrors(form, { name, email, role, password }, addActions);
  let busy = false;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    errors.clear();
    addStatus.textContent = "";
    const values = { name: name.value.trim(), email: email.value.trim(), role: role.value,
                     password: password.value };
    if (!values.name) errors.show("name", "Enter their name.");
    if (!/^[^\s@]+@[^\s@]+$/.test(values.email)) {
      errors.show("email", "Enter an email address such as name@clinic.example.");
    }
    if ([...values.password.normalize("NFKC")].length < MIN_PASSWORD_CHARS) {
      errors.show("password", `Use at least ${MIN_PASSWORD_CHARS} characters.`);
    }
    if (errors.shown.length) {
      errors.focusFirst();
      return;
    }
    busy = true;
    add.setAttribute("aria-disabled", "true");
    addStatus.textContent = "Adding…";
    try {
      const answer = await api.post("/api/staff", values);
      if (!root.isConnected) return;
      members = [...members, answer.staff].sort((a, b) => a.name.localeCompare(b.name));
      render();
      form.reset();
      addStatus.textContent = `${answer.staff.name} was added. They can sign in now.`;
      name.focus();
    } catch (error) {
      addStatus.textContent = "";
      errors.fromApi(error);
    } finally {
      busy = false;
      add.removeAttribute("aria-disabled");
    }
  });

  render();
  loading.replaceWith(
    h("section", { class: "admin-card", "aria-labelledby": "staff-list-title" },
      h("h2", { id: "staff-list-title", text: "Staff members" }),
      status,
      h("div", { class: "admin-scroll", role: "region", tabindex: "0",
                 "aria-label": "Staff members table" }, table)),
    form);
}
