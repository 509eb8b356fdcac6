// The patient's secure page: wires the DOM to the shared socket. Nothing is stored on
// the phone (no localStorage, no service worker); the page holds messages in the DOM only,
// and drops them when the session ends or the page is left.
import { ChatSocket } from "../shared/socket.js";
import { ServerFrame, isRetryable } from "../shared/protocol.js";
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
      // Retryable refusals are resent by the socket; the reply stays "Sending…".
      if (frame.client_msg_id && !isRetryable(frame.code)) {
        thread.failed(frame.client_msg_id, frame.message);
      }
      break;
    case ServerFrame.SUBSCRIBED:
      markRead();
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
// of the conversation stays on the page, which says how to start again.
function endOfSession() {
  socket.stop();
  thread.clear();
  const heading = document.createElement("h1");
  heading.id = "ended";
  heading.tabIndex = -1;
  heading.textContent = "Your secure session has ended";
  const advice = document.createElement("p");
  advice.textContent =
    "To read your messages again, open the link from your text message and verify again.";
  document.getElementById("main").replaceChildren(heading, advice);
  document.title = "Session ended";
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
