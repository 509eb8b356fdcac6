// Renders the secure thread. Message text only ever becomes a text node (never HTML).
//
// Items are kept in seq order: a message that arrives late (replayed after a reconnect)
// goes where its seq says, and replies still waiting for the server ("Sending…", no seq
// yet) stay at the bottom until they have one.
import { placeBySeq } from "../shared/order.js";
import { Status, StatusRank } from "../shared/protocol.js";

const STATUS_WORDS = { sent: "Sent", notified: "Sent", delivered: "Delivered", read: "Read" };

export class Thread {
  constructor(list) {
    this.list = list;
    this.items = new Map(); // message id or client_msg_id -> <li>
  }

  clear() {
    this.list.replaceChildren();
    this.items.clear();
  }

  // A reply typed here, shown at once as "Sending…" until the server has it.
  pending(clientMsgId, body) {
    const li = this.item("mine", "You", body);
    li.dataset.clientMsgId = clientMsgId;
    li.querySelector(".status").textContent = "Sending…";
    this.items.set(clientMsgId, li);
    this.list.append(li);
    li.scrollIntoView({ block: "end" });
  }

  // The server stored a reply of ours: it has an id now (status frames name it).
  acked(frame) {
    const li = this.items.get(frame.client_msg_id);
    if (!li) return;
    this.items.set(frame.message_id, li);
    if (!li.dataset.status) this.setStatus(li, Status.SENT);
  }

  message(frame) {
    const mine = frame.direction === "inbound"; // inbound = from the patient
    const existing = this.items.get(frame.id)
      || (mine ? this.items.get(frame.client_msg_id) : undefined);
    const li = existing || this.item(mine ? "mine" : "theirs",
                                     mine ? "You" : frame.sender.name || "Your care team",
                                     frame.body);
    li.dataset.id = frame.id;
    li.dataset.seq = String(frame.seq);
    const time = li.querySelector("time");
    time.dateTime = frame.created_at;
    time.textContent = when(frame.created_at);
    if (mine) this.setStatus(li, frame.status);
    this.items.set(frame.id, li);
    const atEnd = this.place(li, frame.seq);
    if (!existing && atEnd) li.scrollIntoView({ block: "end" });
  }

  status(frame) {
    const li = this.items.get(frame.message_id);
    if (li && li.classList.contains("mine")) this.setStatus(li, frame.status);
  }

  failed(clientMsgId, reason) {
    const li = this.items.get(clientMsgId);
    if (!li) return;
    li.classList.add("failed");
    li.querySelector(".status").textContent = `Not sent: ${reason}`;
  }

  lastFromCareTeam() {
    const theirs = [...this.list.querySelectorAll("li.theirs[data-seq]")];
    return theirs.length ? Number(theirs[theirs.length - 1].dataset.seq) : 0;
  }

  place(li, seq) {
    return placeBySeq(this.list, li, seq);
  }

  setStatus(li, status) {
    // Statuses never go backwards: a late "sent" does not undo "read".
    if ((StatusRank[li.dataset.status] ?? -1) > (StatusRank[status] ?? -1)) return;
    li.dataset.status = status || "";
    li.querySelector(".status").textContent = STATUS_WORDS[status] || "";
  }

  item(side, who, body) {
    const li = document.createElement("li");
    li.className = `message ${side}`;
    const head = document.createElement("p");
    head.className = "meta";
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who;
    const time = document.createElement("time");
    head.append(name, " ", time);
    const text = document.createElement("p");
    text.className = "body";
    text.textContent = body;
    const status = document.createElement("p");
    status.className = "status";
    li.append(head, text, status);
    return li;
  }
}

// "9:05 AM" today, "Mon, May 4, 9:05 AM" before (links live for days).
function when(iso) {
  const moment = new Date(iso);
  const today = new Date().toDateString() === moment.toDateString();
  return moment.toLocaleString([], today
    ? { hour: "numeric", minute: "2-digit" }
    : { weekday: "short", month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });
}
