// Account settings (admins): patient portal, clinic name, link lifetime and the
// one-time-code requirement; the clinic's SMS number is shown read-only (the operator
// assigns it: whoever sets it reads the replies to it, docs/operations.md). "Save settings" sends only what changed
// (PUT /api/account/settings); turning the portal off is confirmed first, since every
// open console loses its Secure Chat toggle at once.
import { FormErrors, confirmDialog, field, general, h } from "./admin-ui.js";

const TTL_MIN = 1; // server/protocol.py SettingsUpdate.secure_link_ttl_hours: 1–720
const TTL_MAX = 720;
const CLINIC_NAME_MAX = 200;

// server/sms/outbox.py NOTIFICATION with the link cut short (tests/staff/
// test_admin_clinic_name.py compares it with the SMS the simulator delivers).
function notificationSample(name) {
  const clinic = name.trim() || "Your clinic";
  return `${clinic}: you have a new secure message. View it at ${location.origin}/s/…`;
}

export async function showSettings(root, { api }) {
  const status = h("p", { class: "admin-status", role: "status", id: "settings-status" });
  root.append(
    h("p", { class: "admin-lead" },
      "These settings apply to everyone in the clinic. Changes reach open consoles at once."),
  );
  const loading = h("p", { class: "admin-muted", text: "Loading settings…" });
  root.append(loading);

  let saved;
  try {
    saved = await api.get("/api/account/settings");
  } catch (error) {
    loading.replaceWith(h("p", { class: "admin-error", role: "alert", text: general(error) }));
    return;
  }
  if (!root.isConnected) return;

  const portal = h("input", { type: "checkbox", role: "switch", id: "settings-portal" });
  const clinicName = h("input", { type: "text", id: "settings-clinic-name", required: true,
                                  maxlength: CLINIC_NAME_MAX, autocomplete: "organization" });
  const smsNumber = h("input", { type: "text", id: "settings-sms-number", readonly: true,
                                 class: "admin-readonly" });
  const ttl = h("input", { type: "number", id: "settings-ttl", min: TTL_MIN, max: TTL_MAX,
                           step: 1, inputmode: "numeric", required: true });
  const requireCode = h("input", { type: "checkbox", role: "switch", id: "settings-code" });
  const save = h("button", { type: "submit", class: "admin-primary", text: "Save settings" });
  // The secure-message alert exactly as sent, following the name as it is typed.
  const sample = h("span", { class: "admin-sms-sample", id: "settings-clinic-sample" });
  const showSample = () => { sample.textContent = notificationSample(clinicName.value); };
  clinicName.addEventListener("input", showSample);

  const actions = h("div", { class: "admin-actions" }, save, status);
  const form = h("form", { class: "admin-form", id: "settings-form",
                           novalidate: true, "aria-labelledby": "admin-title" },
    h("div", { class: "admin-columns" },
    h("fieldset", { class: "admin-card" },
      h("legend", { text: "Secure messaging" }),
      field("Patient portal", portal, {
        toggle: true,
        hint: "On: staff can send Secure Chat messages, which patients read on a secure " +
              "page after confirming their date of birth. Off: staff can send SMS only.",
      }).wrap,
      field("Require a one-time code", requireCode, {
        toggle: true,
        hint: "Patients also enter a 6-digit code we text them each time they open a " +
              "secure link. Links older than 24 hours always ask for one.",
      }).wrap,
      field("Link lifetime (hours)", ttl, {
        hint: `How long a secure link stays valid: ${TTL_MIN} to ${TTL_MAX} hours ` +
              "(720 hours is 30 days).",
      }).wrap),
    h("fieldset", { class: "admin-card" },
      h("legend", { text: "Clinic" }),
      field("Clinic name", clinicName, {
        hint: ["Heads the patient's secure page and starts the texts SecureChat sends " +
               "for you (secure-message alerts, new links, one-time codes, the reply to " +
               "HELP); texts staff write go out as typed. A patient receives:", sample],
      }).wrap,
      field("SMS number", smsNumber, {
        hint: ["Assigned by whoever runs your SecureChat server (",
               h("code", { text: "securechat set-sms-number" }),
               "); ask them to change it. Patients' replies to it arrive here. Without " +
               "one, texts go out from the shared number, and a reply reaches the " +
               "clinic that texted that patient from it last."],
      }).wrap)),
    actions);
  loading.replaceWith(form);

  const errors = new FormErrors(form, {
    portal_active: portal, clinic_name: clinicName, sms_number: smsNumber,
    secure_link_ttl_hours: ttl, require_code: requireCode,
  }, actions);

  function fill(values) {
    portal.checked = Boolean(values.portal_active);
    clinicName.value = values.clinic_name || "";
    smsNumber.value = values.sms_number || "None: texts go from the shared number";
    ttl.value = String(values.secure_link_ttl_hours ?? "");
    requireCode.checked = Boolean(values.require_code);
    showSample();
  }
  fill(saved);
  let busy = false;

  // The fields that differ from what the server holds, or null after a client-side error.
  function changes() {
    const name = clinicName.value.trim();
    if (!name) errors.show("clinic_name", "Enter the clinic's name.");
    const hours = Number(ttl.value);
    if (!ttl.value.trim() || !Number.isInteger(hours) || hours < TTL_MIN || hours > TTL_MAX) {
      errors.show("secure_link_ttl_hours",
                  `Enter a whole number of hours from ${TTL_MIN} to ${TTL_MAX}.`);
    }
    if (errors.shown.length) return null;
    const now = {
      portal_active: portal.checked, clinic_name: name,
      secure_link_ttl_hours: hours, require_code: requireCode.checked,
    };
    const before = { ...saved, require_code: Boolean(saved.require_code) };
    const diff = {};
    for (const [key, value] of Object.entries(now)) {
      if (value !== before[key]) diff[key] = value;
    }
    return diff;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    errors.clear();
    status.textContent = "";
    const diff = changes();
    if (diff === null) {
      errors.focusFirst();
      return;
    }
    if (!Object.keys(diff).length) {
      status.textContent = "No changes to save.";
      return;
    }
    if (diff.portal_active === false) {
      const ok = await confirmDialog({
        title: "Turn off the patient portal?",
        body: [
          "Staff lose the Secure Chat toggle in every open console at once: new messages " +
          "can go by SMS only, and SMS is not secure.",
          "Messages already sent stay in their threads. You can turn the portal on again " +
          "at any time.",
        ],
        confirm: "Turn off portal",
      });
      if (!ok) return;
    }
    // aria-disabled, not disabled: a disabled button would drop the keyboard focus.
    busy = true;
    save.setAttribute("aria-disabled", "true");
    status.textContent = "Saving…";
    try {
      saved = await api.put("/api/account/settings", diff);
      if (!root.isConnected) return;
      fill(saved);
      status.textContent = "Settings saved";
    } catch (error) {
      status.textContent = "";
      errors.fromApi(error);
    } finally {
      busy = false;
      save.removeAttribute("aria-disabled");
    }
  });
}
