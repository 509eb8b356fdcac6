// The staff console's shell: sign-in, the header, the hash router and the socket. It only
// wires the DOM to the modules; one `switch (frame.type)` dispatches the socket's frames.
//
// Routes: #/inbox (default), #/c/<conversation id> (that thread beside the inbox),
// #/admin/settings | staff | audit (administrators only; client_web/staff/admin.js).
//
// Sign-out, for whatever reason (the button, the idle limit, the session ended or the
// account deactivated: 401 or close 4401), tears everything down (the socket, the timers,
// every patient name and message in the DOM) and shows the sign-in view saying why.
import { api } from "./api.js";
import { h, duration } from "./dom.js";
import { showSignIn } from "./login.js";
import { IdleGuard } from "./idle.js";
import { Inbox } from "./inbox.js";
import { ThreadView } from "./thread.js";
import { ChatSocket } from "../shared/socket.js";
import { ErrorCode, ServerFrame } from "../shared/protocol.js";

const DEFAULT_IDLE_SECONDS = 900; // the server's default, until /api/me says otherwise
const CONNECTION_WORDS = {
  connecting: "Connecting…",
  online: "Connected",
  offline: "Offline: reconnecting…",
  closed: "Disconnected. Reload the page to try again.",
};
const SESSION_ENDED = "Your session ended. Sign in again.";
const DEACTIVATED = "Your account was deactivated by an administrator.";
const ADMIN_SECTIONS = { settings: "Settings", staff: "Staff", audit: "Audit log" };

const topbar = document.getElementById("topbar");
const main = document.getElementById("main");
let session = null;

// --- signing in and out ------------------------------------------------------------------

async function boot() {
  try {
    const me = await api.get("/api/me", { signOutOn401: false });
    start(me);
  } catch (exc) {
    signIn(exc.status === 401 ? "" : exc.message);
  }
}

function signIn(reason) {
  topbar.hidden = true;
  topbar.replaceChildren();
  main.className = "main main-signin";
  showSignIn(main, { reason, onSignedIn: start });
}

function start(me) {
  const account = { ...(me.account || {}) };
  const isAdmin = me.staff.role === "admin";
  const connection = h("p", { id: "connection", class: "connection", role: "status",
                              dataset: { state: "connecting" } }, CONNECTION_WORDS.connecting);
  const clinic = h("span", { class: "clinic" }, account.clinic_name || "");
  const links = { inbox: h("a", { href: "#/inbox" }, "Inbox") };
  if (isAdmin) {
    for (const [section, label] of Object.entries(ADMIN_SECTIONS)) {
      links[section] = h("a", { href: `#/admin/${section}` }, label);
    }
  }
  const signOutButton = h("button", { type: "button", class: "secondary small-button",
                                      onclick: () => signOut() }, "Sign out");
  topbar.replaceChildren(
    h("div", { class: "brand" },
      h("span", { class: "logo", "aria-hidden": "true" }, "SC"),
      h("span", { class: "brand-text" }, h("span", { class: "product" }, "SecureChat"), clinic)),
    h("nav", { "aria-label": "Main", class: "nav" },
      h("ul", {}, ...Object.values(links).map((link) => h("li", {}, link))),
      h("div", { class: "who-am-i" },
        connection,
        h("span", { class: "me", title: me.staff.email }, me.staff.name),
        signOutButton)));
  topbar.hidden = false;

  const socket = new ChatSocket({
    url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
    onState: (state) => onState(state),
    onFrame: (frame) => onFrame(frame),
  });
  const inbox = new Inbox({ api, onOpen: (id) => { location.hash = `#/c/${id}`; } });
  const thread = new ThreadView({ api, socket, me, account,
                                  onSummary: (id) => inbox.get(id) });
  const workspace = h("div", { class: "workspace", dataset: { view: "inbox" } },
                      h("h1", { class: "visually-hidden" }, "Messages"),
                      inbox.el, thread.el);
  const adminView = h("div", { class: "admin-view", hidden: true });
  main.className = "main main-console";
  main.replaceChildren(workspace, adminView);

  const idle = new IdleGuard({
    idleSeconds: me.idle_timeout_seconds || DEFAULT_IDLE_SECONDS,
    report: () => api.get("/api/me"),
    onTimeout: () => idleSignOut(),
  });
  api.onActivity = () => idle.activity();
  api.onUnauthenticated = (error) => endSession(whyEnded(error));

  session = { me, account, isAdmin, socket, inbox, thread, idle, workspace, adminView,
              connection, clinic, links, readyOnce: false };
  idle.start();
  socket.start();
  inbox.load().then(() => {
    // A thread opened before the inbox arrived gets its header now.
    if (session && session.thread.id) thread.updateSummary(inbox.get(thread.id));
  });
  route();
}

async function signOut() {
  if (!session) return;
  try {
    await api.post("/api/auth/logout", undefined, { signOutOn401: false });
  } catch {
    // already over, or offline: the session ends here either way
  }
  endSession("You signed out.");
}

async function idleSignOut() {
  if (!session) return;
  const seconds = session.idle.idleSeconds;
  try {
    await api.post("/api/auth/logout", undefined, { background: true, signOutOn401: false });
  } catch {
    // the server may have ended it already; it does so by itself at the same limit
  }
  endSession(`You were signed out after ${duration(seconds)} without activity.`);
}

// The socket closed with 4401: the session is over, and the server says why (only to
// the holder of that session: deactivated, or just ended).
async function signedOutBySocket() {
  if (!session) return;
  try {
    await api.get("/api/me", { background: true, signOutOn401: false });
    endSession(SESSION_ENDED); // the socket said it is over: so it is, here
  } catch (error) {
    endSession(whyEnded(error));
  }
}

function whyEnded(error) {
  return error && error.code === ErrorCode.ACCOUNT_DEACTIVATED ? DEACTIVATED : SESSION_ENDED;
}

function endSession(reason) {
  if (!session) return;
  const ending = session;
  session = null;
  api.onActivity = null;
  api.onUnauthenticated = null;
  ending.idle.stop();
  ending.socket.stop();
  ending.thread.destroy();
  ending.inbox.destroy();
  ending.adminView.replaceChildren();
  main.replaceChildren();
  signIn(reason);
}

// --- the socket --------------------------------------------------------------------------

function onState(state) {
  if (!session) return;
  if (state === "signed_out") {
    signedOutBySocket();
    return;
  }
  session.connection.textContent = CONNECTION_WORDS[state] || state;
  session.connection.dataset.state = state;
  session.thread.setOnline(state === "online");
}

function onFrame(frame) {
  if (!session) return;
  const { inbox, thread } = session;
  switch (frame.type) {
    case ServerFrame.READY:
      if (frame.account) applyAccount(frame.account);
      // After a reconnect, what changed meanwhile: the inbox is read again (threads
      // resume by seq in the socket itself).
      if (session.readyOnce) inbox.load({ background: true });
      session.readyOnce = true;
      break;
    case ServerFrame.CONVERSATION:
      inbox.update(frame);
      thread.updateSummary(inbox.get(frame.id));
      break;
    case ServerFrame.PRESENCE:
      inbox.presence(frame.conversation_id, frame.patient_online);
      thread.presence(frame.conversation_id, frame.patient_online);
      break;
    case ServerFrame.ACCOUNT:
      applyAccount(frame);
      break;
    case ServerFrame.MESSAGE:
    case ServerFrame.ACK:
    case ServerFrame.STATUS:
    case ServerFrame.SUBSCRIBED:
    case ServerFrame.TYPING:
    case ServerFrame.NOTICE:
    case ServerFrame.ERROR:
      thread.handle(frame);
      break;
    case ServerFrame.READ:
    case ServerFrame.PONG:
      break;
    default:
      console.warn("unknown frame type", frame.type);
  }
}

// The account's settings changed (an admin saved them, on any node): applied live.
function applyAccount(change) {
  const { account, thread, clinic } = session;
  if (typeof change.portal_active === "boolean") account.portal_active = change.portal_active;
  if (typeof change.clinic_name === "string") account.clinic_name = change.clinic_name;
  clinic.textContent = account.clinic_name || "";
  session.me.account = { ...session.me.account, ...account };
  thread.setAccount(account);
}

// --- the router --------------------------------------------------------------------------

function route() {
  if (!session) return;
  const hash = location.hash || "#/inbox";
  const conversation = hash.match(/^#\/c\/([A-Za-z0-9_.:-]{1,64})$/);
  const admin = hash.match(/^#\/admin\/(settings|staff|audit)$/);
  if (conversation) {
    showWorkspace(conversation[1]);
  } else if (admin && session.isAdmin) {
    showAdmin(admin[1]);
  } else if (hash === "#/inbox") {
    showWorkspace(null);
  } else {
    history.replaceState(null, "", "#/inbox");
    showWorkspace(null);
  }
}

function markNav(active) {
  for (const [name, link] of Object.entries(session.links)) {
    if (name === active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function showWorkspace(conversationId) {
  const { workspace, adminView, inbox, thread } = session;
  const fromAdmin = workspace.hidden;
  adminView.hidden = true;
  adminView.replaceChildren();
  workspace.hidden = false;
  markNav("inbox");
  workspace.dataset.view = conversationId ? "thread" : "inbox";
  inbox.select(conversationId);
  if (conversationId) {
    document.title = "Conversation · SecureChat";
    const opening = thread.id !== conversationId;
    thread.open(conversationId);
    if (opening) thread.focus();
  } else {
    document.title = "Inbox · SecureChat";
    thread.close();
    if (fromAdmin) inbox.filter.focus();
  }
}

async function showAdmin(section) {
  const { workspace, adminView, thread } = session;
  thread.close();
  workspace.hidden = true;
  adminView.hidden = false;
  markNav(section);
  document.title = `${ADMIN_SECTIONS[section]} · SecureChat`;
  const current = session;
  try {
    const admin = await import("./admin.js");
    if (session !== current || location.hash !== `#/admin/${section}`) return;
    adminView.replaceChildren();
    await admin.showAdmin(adminView, section, { api, me: current.me });
  } catch (exc) {
    if (session !== current) return;
    adminView.replaceChildren(h("div", { class: "admin-error" },
      h("h1", {}, ADMIN_SECTIONS[section]),
      h("p", { class: "error", role: "alert" },
        `This page could not be loaded: ${exc.message}`)));
  }
}

window.addEventListener("hashchange", route);
boot();
