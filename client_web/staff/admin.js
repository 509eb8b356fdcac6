// The console's admin pages: account settings, staff and the audit log. The shell calls
// showAdmin(container, section, ctx) for #/admin/<section> routes, with
// ctx = { api, me } (api: ./api.js's helper; me: the /api/me answer).
//
// Admins only: for anyone else nothing is fetched and a short notice is shown (the server
// answers 403 to their requests anyway). Each call replaces the container's content; an
// answer that arrives after the page was left is dropped.
import { h } from "./admin-ui.js";
import { showAudit } from "./admin-audit.js";
import { showSettings } from "./admin-settings.js";
import { showStaff } from "./admin-staff.js";

const SECTIONS = {
  settings: { title: "Account settings", show: showSettings },
  staff: { title: "Staff", show: showStaff },
  audit: { title: "Audit log", show: showAudit },
};

let stylesheet = null;

// admin.css is loaded the first time an admin page is shown (with a <link>, which the
// CSP's 'self' allows), so the shell need not know about it; the page waits for it so it
// never flashes unstyled.
function loadStylesheet() {
  if (stylesheet) return stylesheet;
  const href = new URL("./admin.css", import.meta.url).href;
  const present = [...document.querySelectorAll('link[rel="stylesheet"]')]
    .find((link) => link.href === href);
  if (present) {
    stylesheet = Promise.resolve();
    return stylesheet;
  }
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  stylesheet = new Promise((resolve) => {
    link.addEventListener("load", resolve, { once: true });
    link.addEventListener("error", resolve, { once: true }); // unstyled beats blank
  });
  document.head.append(link);
  return stylesheet;
}

/**
 * Render admin page `section` ("settings" | "staff" | "audit") into `container`.
 * Returns a promise that settles once the page's first data is shown.
 */
export async function showAdmin(container, section, ctx) {
  const page = SECTIONS[section] || SECTIONS.settings;
  const root = h("div", { class: "admin", id: "admin", "data-section": section });
  const heading = h("h1", { id: "admin-title", tabindex: "-1", text: page.title });
  root.append(h("div", { class: "admin-head" }, heading));
  await loadStylesheet();
  container.replaceChildren(root);
  heading.focus({ preventScroll: true });
  document.title = `${page.title} · SecureChat`;

  if (ctx?.me?.staff?.role !== "admin") {
    root.append(h("p", { class: "admin-notice", role: "alert",
                         text: "This page is for administrators. Ask an administrator " +
                               "if you need a setting changed." }));
    return;
  }
  await page.show(root, ctx);
}
