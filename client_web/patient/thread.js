// Renders the secure thread. Message text only ever becomes a text node (never HTML).

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

  message(frame) {
    const mine = frame.direction === "inbound"; // inbound = from the patient
    const existing = this.items.get(frame.client_msg_id) || this.items.get(frame.id);
    const li = existing || this.item(mine ? "mine" : "theirs",
                                     mine ? "You" : frame.sender.name || "Your care team",
                                     frame.body);
    li.dataset.id = frame.id;
    li.dataset.seq = String(frame.seq);
    li.querySelector("time").dateTime = frame.created_at;
    li.querySelector("time").textContent = new Date(frame.created_at).toLocaleTimeString(
      [], { hour: "numeric", minute: "2-digit" });
    this.setStatus(li, mine ? frame.status : "");
    this.items.set(frame.id, li);
    if (!existing) {
      this.list.append(li);
      li.scrollIntoView({ block: "end" });
    }
  }

  status(frame) {
    const li = this.items.get(frame.message_id);
    if (li && li.classList.contains("mine")) this.setStatus(li, frame.status);
  }

  failed(clientMsgId, reason) {
    const li = this.items.get(clientMsgId);
    if (li) li.querySelector(".status").textContent = `Not sent: ${reason}`;
  }

  lastFromCareTeam() {
    const theirs = [...this.list.querySelectorAll("li.theirs[data-seq]")];
    return theirs.length ? Number(theirs[theirs.length - 1].dataset.seq) : 0;
  }

  setStatus(li, status) {
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
