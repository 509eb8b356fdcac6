// The patient's secure page: wires the DOM to the shared socket. Nothing is stored on
// the phone (no localStorage, no service worker); the page holds messages in the DOM only,
// and drops them when the session ends or the page is left.
import { ChatSocket } from "../shared/socket.js";
import { ErrorCode, ServerFrame, isRetryable } from "../shared/protocol.js";
import { Thread } from "./thread.js";

const TYPING_SEND_MS = 2000; // the server relays at most one typing notice per 2 s
const TYPING_SHOW_MS = 4000;

const thread = new Thread(document.getElementById("thread"));
const connection = document.getElementById("connection");
const typingLine = document.getElementById("typing");
const composer = document.getElementById("composer");
const input = document.getElementById("body");
let conversationId = null;
let lastTypingSent = 0;
let typingTimer = null;
let lastReadSent = 0;
let over = false; // the page now says why it is over (session ended or portal off)

const STATES = {
  connecting: "Connecting…",
  online: "Connected",
  offline: "Offline: reconnecting…",
  closed: "Disconnected. Reload the page to try again.",
};

const socket = new ChatSocket({
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
  onState: (state) => {
    if (state === "signed_out") {
      endOfSession();
      return;
    }
    connection.textContent = STATES[state] || state;
    connection.dataset.state = state;
  },
  onFrame: handle,
});

function handle(frame) {
  switch (frame.type) {
    case ServerFrame.READY:
      if (!conversationId) {
        conversationId = frame.conversation_id;
        socket.follow(conversationId);
      }
      break;
    case ServerFrame.MESSAGE:
      thread.message(frame);
      markRead();
      break;
    case ServerFrame.ACK:
      thread.acked(frame);
      break;
    case ServerFrame.STATUS:
      thread.status(frame);
      break;
    case ServerFrame.TYPING:
      typingLine.textContent = `${frame.sender?.name || "Your care team"} is typing…`;
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => { typingLine.textContent = ""; }, TYPING_SHOW_MS);
      break;
    case ServerFrame.ERROR:
      if (frame.code === ErrorCode.PORTAL_INACTIVE) {
        portalOff("");
        break;
      }
      // Retryable refusals are resent by the socket; the reply stays "Sending…".
      if (frame.client_msg_id && !isRetryable(frame.code)) {
        thread.failed(frame.client_msg_id, frame.message);
      }
      break;
    case ServerFrame.SUBSCRIBED:
      markRead();
      break;
    case ServerFrame.ACCOUNT:
      // Sent only when the clinic turns secure messaging off; the socket closes next.
      if (frame.portal_active === false) portalOff(frame.clinic_name);
      break;
    case ServerFrame.READ:
    case ServerFrame.PONG:
      break;
    default:
      console.warn("unknown frame type", frame.type);
  }
}

// Tell the care team what has been on screen: the newest of their messages.
function markRead() {
  if (document.visibilityState !== "visible" || !conversationId) return;
  const seq = thread.lastFromCareTeam();
  if (seq > lastReadSent && socket.read(conversationId, seq)) lastReadSent = seq;
}

// The session is over (idle or absolute limit, ended elsewhere, link revoked): nothing
// of the conversation stays on the page, which says how to start again. When it ended
// because the clinic turned secure messaging off while this page was away, the chat
// page's own answer (409) says so instead.
async function endOfSession() {
  if (over) return;
  over = true;
  socket.stop();
  thread.clear();
  try {
    const answer = await fetch("/s/chat", { credentials: "same-origin" });
    if (answer.status === 409) {
      over = false;
      portalOff(clinicFrom(await answer.text()));
      return;
    }
  } catch {
    // Offline: the general advice below holds either way.
  }
  showEnd("ended", "Session ended", "Your secure session has ended",
    "To read your messages again, open the link from your text message and verify again.");
}

// The clinic turned secure messaging off: the page empties and says to call. Nothing can
// be sent or read here until the clinic turns it on again and texts a new link.
function portalOff(clinic) {
  if (over) return;
  over = true;
  socket.stop();
  thread.clear();
  showEnd("portal-off", "Secure messaging not available", "Secure messaging is not available",
    `Please call ${clinic || "your clinic"}.`);
}

function clinicFrom(page) {
  const text = new DOMParser().parseFromString(page, "text/html")
    .querySelector("#portal-off p")?.textContent || "";
  return text.replace(/^Please call /, "").replace(/\.$/, "");
}

function showEnd(id, title, headingText, adviceText) {
  const heading = document.createElement("h1");
  heading.id = id;
  heading.tabIndex = -1;
  heading.textContent = headingText;
  const advice = document.createElement("p");
  advice.textContent = adviceText;
  const box = document.createElement("div");
  box.className = "notice";
  box.append(heading, advice);
  document.getElementById("main").replaceChildren(box);
  document.title = title;
  heading.focus();
}

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const body = input.value.trim();
  if (!body || !conversationId) return;
  const clientMsgId = socket.send(conversationId, body, true);
  thread.pending(clientMsgId, body);
  input.value = "";
  input.focus();
});

input.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter is a new line; not while an input method is composing.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    composer.requestSubmit();
  }
});

input.addEventListener("input", () => {
  const now = Date.now();
  if (conversationId && now - lastTypingSent > TYPING_SEND_MS && socket.typing(conversationId)) {
    lastTypingSent = now;
  }
});

document.addEventListener("visibilitychange", markRead);

// Leaving the page (End session, Back, another site) drops the conversation from the DOM,
// so a copy kept for Back/Forward holds nothing; coming back that way starts afresh.
window.addEventListener("pagehide", () => {
  socket.stop();
  thread.clear();
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) location.reload();
});

socket.start();
