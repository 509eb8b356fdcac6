// The patient's secure page: wires the DOM to the shared socket. Nothing is stored on
// the phone (no localStorage, no service worker); the page holds messages in the DOM only.
import { ChatSocket } from "../shared/socket.js";
import { ServerFrame } from "../shared/protocol.js";
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
  closed: "Disconnected",
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
    case ServerFrame.STATUS:
      thread.status(frame);
      break;
    case ServerFrame.TYPING:
      typingLine.textContent = `${frame.sender.name || "Your care team"} is typing…`;
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => { typingLine.textContent = ""; }, TYPING_SHOW_MS);
      break;
    case ServerFrame.ERROR:
      if (frame.client_msg_id) thread.failed(frame.client_msg_id, frame.message);
      break;
    case ServerFrame.ACK:
    case ServerFrame.SUBSCRIBED:
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
  if (seq > lastReadSent) {
    lastReadSent = seq;
    socket.read(conversationId, seq);
  }
}

function endOfSession() {
  socket.stop();
  thread.clear(); // nothing of the conversation stays on the page
  document.getElementById("main").replaceChildren(Object.assign(
    document.createElement("p"),
    { className: "ended", textContent:
      "Your secure session has ended. Open the link from your text message to verify again." },
  ));
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
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    composer.requestSubmit();
  }
});

input.addEventListener("input", () => {
  const now = Date.now();
  if (conversationId && now - lastTypingSent > TYPING_SEND_MS) {
    lastTypingSent = now;
    socket.typing(conversationId);
  }
});

document.addEventListener("visibilitychange", markRead);
socket.start();
