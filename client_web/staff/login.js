// The sign-in view. After a sign-out (the button, the idle limit, an ended session) it
// says why in a role=status line; a wrong email or password is a role=alert error.
import { api } from "./api.js";
import { h } from "./dom.js";

export function showSignIn(container, { reason = "", onSignedIn }) {
  const email = h("input", { id: "email", name: "email", type: "email", required: true,
                             autocomplete: "username", spellcheck: "false" });
  const password = h("input", { id: "password", name: "password", type: "password",
                                required: true, autocomplete: "current-password" });
  const error = h("p", { id: "signin-error", class: "error", role: "alert" });
  const button = h("button", { type: "submit", class: "primary wide" }, "Sign in");
  const form = h("form", { class: "card signin-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "email" }, "Email"), email),
    h("div", { class: "field" }, h("label", { for: "password" }, "Password"), password),
    error,
    button);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    for (const field of [email, password]) field.removeAttribute("aria-invalid");
    const missing = [email, password].find((field) => !field.value.trim());
    if (missing) {
      missing.setAttribute("aria-invalid", "true");
      error.textContent = missing === email ? "Enter your email address."
        : "Enter your password.";
      missing.focus();
      return;
    }
    button.disabled = true;
    button.textContent = "Signing in…";
    try {
      const me = await api.post("/api/auth/login",
                                { email: email.value.trim(), password: password.value },
                                { signOutOn401: false });
      onSignedIn(me);
    } catch (exc) {
      password.value = "";
      error.textContent = signInError(exc);
      email.setAttribute("aria-invalid", "true");
      password.setAttribute("aria-invalid", "true");
      email.setAttribute("aria-describedby", "signin-error");
      password.focus();
      button.disabled = false;
      button.textContent = "Sign in";
    }
  });

  const status = h("p", { id: "signin-status", class: "signin-reason", role: "status" },
                   reason);
  status.hidden = !reason;
  container.replaceChildren(
    h("div", { class: "signin" },
      h("div", { class: "signin-brand" },
        h("span", { class: "logo", "aria-hidden": "true" }, "SC"),
        h("span", {}, "SecureChat")),
      h("h1", {}, "Sign in"),
      status,
      form,
      h("p", { class: "small" },
        "For clinic staff. Patients: open the link from your text message.")));
  document.title = "Sign in · SecureChat";
  email.focus();
}

function signInError(exc) {
  switch (exc.code) {
    case "unauthenticated":
      return "That email and password don't match an active account.";
    case "account_deactivated": // said only after the right password
      return "Your account was deactivated by an administrator. Ask an administrator "
        + "of your clinic if you need it again.";
    case "rate_limited":
      return "Too many failed attempts. Wait 15 minutes, then try again.";
    case "network":
      return exc.message;
    default:
      return `Sign-in failed: ${exc.message}`;
  }
}
