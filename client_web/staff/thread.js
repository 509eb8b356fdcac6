// The thread pane: one conversation's SMS and Secure Chat messages in one list, in seq
// order, each marked Secure (lock) or SMS, with direction, sender, time and status; the
// patient's typing; older history on scrolling up; the composer.
//
// Loading: a history page over HTTP (newest 50), then `follow(id, lastSeq)` on the
// socket, whose replay starts after that page and goes live: nothing is missed or shown
// twice (and the socket drops any seq it has passed). Items are keyed by message id, and
// by client_msg_id while a send of ours waits for its ack, so a late or repeated frame
// updates an item instead of adding one. Message text only ever becomes a text node.
import { ServerFrame, Status, StatusRank, isRetryable } from "../shared/protocol.js";
import { Composer } from "./composer.js";
import { NewLinkButton } from "./new-link.js";
import { h, icon, messageTime, fullTime, longDate } from "./dom.js";
import { placeBySeq } from "../shared/order.js";

const PAGE = 50;
const TYPING_SEND_MS = 2000; // the server relays one typing notice per 2 s at most
const TYPING_SHOW_MS = 4000;
const NEAR_BOTTOM_PX = 120;
const NEAR_TOP_PX = 150;

const WORDS = {
  sms: { queued: "Queued", sent: "Sent", delivered: "Delivered",
         undelivered: "Not delivered", failed: "Failed" },
  secure: { sent: "Sent", notified: "Sent · patient notified by text",
            not_notified: "Not notified: no text could tell the patient about it",
            delivered: "Delivered", read: "Read" },
};
// Why a secure message's notification was not sent (`not_notified`'s error_code; a
// replayed message has none, docs/protocol.md).
const NOTIFY_ERRORS = {
  opted_out: "Not notified: the patient replied STOP, so no text tells them about it",
};
// Carrier error codes staff meet most (Twilio's numbering).
const SMS_ERRORS = {
  21610: "the number replied STOP",
  21211: "not a valid phone number",
  21614: "not a mobile number",
  30003: "phone unreachable",
  30005: "unknown or inactive number",
  30006: "landline or unreachable carrier",
  30007: "blocked by the carrier",
};
const REFUSALS = {
  portal_inactive: "Not sent: Secure Chat is turned off for this clinic.",
  opted_out: "Not sent: this patient replied STOP and gets no SMS.",
  not_found: "Not sent: this conversation no longer exists.",
  forbidden: "Not sent: you are not allowed to send this.",
};

export class ThreadView {
  constructor({ api, socket, me, account, onSummary }) {
    this.api = api;
    this.socket = socket;
    this.me = me;
    this.account = account;
    this.onSummary = onSummary; // id -> the inbox's summary of it
    this.id = null;
    this.generation = 0;
    this.byId = new Map();
    this.byClientId = new Map();
    this.early = new Map(); // message id -> status frames that came before the message
    this.hasMore = false;
    this.loadingOlder = false;
    this.lastRead = 0;
    this.lastTypingSent = 0;
    this.typingTimer = null;
    this.composer = new Composer({ onSend: (body, secure) => this.send(body, secure),
                                   onTyping: () => this.typing() });
    this.build();
    this.onVisible = () => this.markRead();
    document.addEventListener("visibilitychange", this.onVisible);
  }

  destroy() {
    this.close();
    this.resizes.disconnect();
    document.removeEventListener("visibilitychange", this.onVisible);
    this.el.replaceChildren();
  }

  build() {
    this.title = h("h2", { id: "thread-title", tabindex: "-1" });
    this.sub = h("p", { class: "thread-sub" });
    this.back = h("a", { class: "back", href: "#/inbox", "aria-label": "Back to inbox" },
                  h("span", { "aria-hidden": "true" }, "‹ "), "Inbox");
    this.notices = h("div", { class: "notices" });
    this.newLink = new NewLinkButton(this.api, () => this.id);
    this.list = h("ol", { id: "thread", class: "thread" });
    this.older = h("button", { type: "button", class: "link load-older", hidden: true,
                               onclick: () => this.loadOlder() }, "Show earlier messages");
    this.info = h("p", { class: "thread-info", role: "status" });
    this.scroller = h("div", { class: "log-scroll", role: "log",
                               "aria-label": "Conversation history",
                               tabindex: "0" },
      this.older, this.info, this.list);
    this.stick = true; // following the newest message (the view was at the end)
    this.scroller.addEventListener("scroll", () => {
      this.stick = this.nearEnd();
      if (this.scroller.scrollTop < NEAR_TOP_PX) this.loadOlder();
    }, { passive: true });
    // The view shrinks when the composer grows (a longer draft, a note): keep the newest
    // message in sight if it was.
    this.resizes = new ResizeObserver(() => {
      if (this.stick) this.scrollToEnd();
    });
    this.resizes.observe(this.scroller);
    this.typingLine = h("p", { id: "typing", class: "typing", "aria-live": "polite" });
    this.conversation = h("div", { class: "conversation", hidden: true },
      h("header", { class: "thread-head" }, this.back,
        h("div", { class: "thread-heading" }, this.title, this.sub), this.newLink.el),
      this.notices,
      this.scroller,
      this.typingLine,
      this.composer.el);
    this.placeholder = h("div", { class: "no-thread" },
      icon("sms"),
      h("h2", {}, "No conversation open"),
      h("p", {}, "Choose a patient in the inbox, or add one, to read and send messages."));
    this.el = h("section", { class: "thread-pane", "aria-label": "Conversation" },
                this.placeholder, this.conversation);
  }

  // --- opening and closing ---------------------------------------------------------------

  async open(conversationId) {
    if (this.id === conversationId) return;
    this.close();
    this.id = conversationId;
    const generation = ++this.generation;
    this.placeholder.hidden = true;
    this.conversation.hidden = false;
    this.list.replaceChildren();
    this.notices.replaceChildren();
    this.lockBanner = null;
    this.newLink.reset();
    this.typingLine.textContent = "";
    this.older.hidden = true;
    this.info.textContent = "Loading messages…";
    this.list.setAttribute("aria-busy", "true");
    this.composer.clear();
    this.updateSummary(this.onSummary(conversationId) || { id: conversationId });
    let page;
    try {
      page = await this.api.get(
        `/api/conversations/${encodeURIComponent(conversationId)}/messages?limit=${PAGE}`);
    } catch (exc) {
      if (generation !== this.generation) return;
      this.list.removeAttribute("aria-busy");
      this.info.textContent = exc.code === "not_found"
        ? "This conversation does not exist, or is not in your clinic."
        : `Messages could not be loaded: ${exc.message}`;
      if (exc.code === "network") this.socket.follow(conversationId, 0); // resumes online
      return;
    }
    if (generation !== this.generation) return; // another conversation was opened
    this.info.textContent = "";
    this.list.removeAttribute("aria-busy");
    for (const message of page.messages) this.message(message, { quiet: true });
    this.hasMore = page.has_more;
    this.older.hidden = !this.hasMore;
    if (!page.messages.length) this.info.textContent = "No messages yet.";
    for (const pending of this.socket.pending(conversationId)) {
      if (!this.byClientId.has(pending.client_msg_id)) {
        this.pending(pending.client_msg_id, pending.body, pending.secure);
      }
    }
    const lastSeq = page.messages.length ? page.messages[page.messages.length - 1].seq : 0;
    this.socket.follow(conversationId, lastSeq);
    this.scrollToEnd();
  }

  close() {
    if (this.id) this.socket.unfollow(this.id);
    this.id = null;
    this.generation += 1;
    this.byId.clear();
    this.byClientId.clear();
    this.early.clear();
    this.lastRead = 0;
    this.hasMore = false;
    clearTimeout(this.typingTimer);
    this.list.replaceChildren();
    this.list.removeAttribute("aria-busy");
    this.placeholder.hidden = false;
    this.conversation.hidden = true;
  }

  focus() {
    this.composer.focus();
  }

  async loadOlder() {
    if (!this.id || !this.hasMore || this.loadingOlder) return;
    const first = this.list.querySelector("li[data-seq]");
    if (!first) return;
    this.loadingOlder = true;
    const generation = this.generation;
    this.older.textContent = "Loading earlier messages…";
    try {
      const page = await this.api.get(
        `/api/conversations/${encodeURIComponent(this.id)}/messages`
        + `?before_seq=${first.dataset.seq}&limit=${PAGE}`);
      if (generation !== this.generation) return;
      // Keep what is on screen where it is: grow the list above it by exactly the
      // height added (the scroller's own anchoring is off, so this is the only shift).
      const before = this.scroller.scrollHeight;
      for (const message of page.messages) this.message(message, { quiet: true });
      this.hasMore = page.has_more;
      this.older.textContent = "Show earlier messages";
      this.older.hidden = !this.hasMore;
      this.scroller.scrollTop += this.scroller.scrollHeight - before;
    } catch (exc) {
      if (generation === this.generation) {
        this.info.textContent = `Earlier messages could not be loaded: ${exc.message}`;
      }
    } finally {
      if (generation === this.generation) {
        this.older.textContent = "Show earlier messages";
        this.older.hidden = !this.hasMore;
      }
      this.loadingOlder = false;
    }
  }

  // --- frames ----------------------------------------------------------------------------

  handle(frame) {
    switch (frame.type) {
      case ServerFrame.MESSAGE:
        if (frame.conversation_id === this.id) {
          this.message(frame);
          this.markRead();
        }
        return;
      case ServerFrame.ACK:
        this.acked(frame);
        return;
      case ServerFrame.STATUS:
        if (frame.conversation_id === this.id) this.status(frame);
        return;
      case ServerFrame.SUBSCRIBED:
        if (frame.conversation_id === this.id) this.markRead();
        return;
      case ServerFrame.TYPING:
        if (frame.conversation_id === this.id) this.showTyping(frame.sender);
        return;
      case ServerFrame.NOTICE:
        if (frame.conversation_id === this.id) this.notice(frame);
        return;
      case ServerFrame.ERROR:
        if (frame.client_msg_id) this.refused(frame);
        return;
      default:
    }
  }

  // A summary of the open conversation changed (inbox frame, presence, the account).
  updateSummary(summary) {
    if (!summary || summary.id !== this.id) return;
    this.summary = { ...(this.summary?.id === summary.id ? this.summary : {}), ...summary };
    const patient = this.summary.patient || {};
    this.title.textContent = patient.display_name || "Conversation";
    const parts = [];
    if (patient.masked_phone) parts.push(h("span", { class: "phone" }, patient.masked_phone));
    if (this.summary.patient_online) {
      parts.push(h("span", { class: "presence" },
        h("span", { class: "dot", "aria-hidden": "true" }), "On the secure page now"));
    }
    if (patient.unknown) parts.push(h("span", { class: "tag tag-unknown" }, "Unknown number"));
    if (patient.opted_out) {
      // Short, to fit a phone's header; the date is in its tooltip and above the composer.
      const date = longDate(patient.opted_out_at);
      parts.push(h("span", { class: "tag tag-opted-out", id: "thread-opted-out",
                             title: date ? `Replied STOP on ${date}` : "Replied STOP" },
        "Opted out of SMS"));
    }
    this.sub.replaceChildren(...parts);
    this.composer.setState({ portalActive: this.account.portal_active, patient });
    this.newLink.setState({ portalActive: this.account.portal_active, patient });
  }

  presence(conversationId, online) {
    if (conversationId !== this.id || !this.summary) return;
    this.updateSummary({ ...this.summary, patient_online: online });
  }

  setAccount(account) {
    this.account = account;
    this.composer.setState({ portalActive: account.portal_active });
    this.newLink.setState({ portalActive: account.portal_active,
                            patient: this.summary?.patient });
  }

  // The connection went down or came back: our unsent messages say which.
  setOnline(online) {
    this.online = online;
    for (const li of this.byClientId.values()) {
      if (li.classList.contains("pending") && !li.classList.contains("failed")
          && !li.dataset.note) {
        li.querySelector(".status").textContent = online ? "Sending…" : "Waiting to send";
      }
    }
  }

  // --- items -----------------------------------------------------------------------------

  message(frame, { quiet = false } = {}) {
    let li = this.byId.get(frame.id);
    const mine = frame.sender && frame.sender.kind === "staff" && frame.sender.id
      === this.me.staff.id;
    if (!li && mine) li = this.byClientId.get(frame.client_msg_id);
    const wasNearEnd = this.nearEnd();
    const isNew = !li || !li.dataset.seq;
    if (!li) li = this.item(frame.direction, frame.channel);
    li.classList.remove("pending");
    delete li.dataset.note;
    li.dataset.id = frame.id;
    li.dataset.seq = String(frame.seq);
    li.dataset.channel = frame.channel;
    li.dataset.direction = frame.direction;
    li.querySelector(".who").textContent = this.who(frame.sender, frame.direction);
    li.querySelector(".body").textContent = frame.body;
    const time = li.querySelector("time");
    time.dateTime = frame.created_at;
    time.textContent = messageTime(frame.created_at);
    time.title = fullTime(frame.created_at);
    this.byId.set(frame.id, li);
    if (frame.client_msg_id && mine) this.byClientId.set(frame.client_msg_id, li);
    this.setStatus(li, frame.status);
    for (const early of this.early.get(frame.id) || []) this.setStatus(li, early.status,
                                                                     early.error_code);
    this.early.delete(frame.id);
    this.place(li, frame.seq);
    if (!quiet) this.info.textContent = "";
    if (!quiet && isNew && (wasNearEnd || mine)) this.scrollToEnd();
  }

  // A send of ours, shown at once (no seq yet: it stays at the bottom until it has one).
  pending(clientMsgId, body, secure) {
    const channel = secure ? "secure" : "sms";
    const li = this.item("outbound", channel);
    li.classList.add("pending");
    li.dataset.clientMsgId = clientMsgId;
    li.dataset.channel = channel;
    li.dataset.direction = "outbound";
    li.querySelector(".who").textContent = "You";
    li.querySelector(".body").textContent = body;
    li.querySelector(".status").textContent = this.socket.online ? "Sending…"
      : "Waiting to send";
    this.byClientId.set(clientMsgId, li);
    this.list.append(li);
    this.info.textContent = "";
    this.scrollToEnd();
  }

  acked(frame) {
    const li = this.byClientId.get(frame.client_msg_id);
    if (!li || li.dataset.seq) return;
    li.classList.remove("pending");
    delete li.dataset.note;
    li.dataset.id = frame.message_id;
    li.dataset.seq = String(frame.seq);
    this.byId.set(frame.message_id, li);
    this.setStatus(li, li.dataset.channel === "secure" ? "sent" : "queued");
    for (const early of this.early.get(frame.message_id) || []) {
      this.setStatus(li, early.status, early.error_code);
    }
    this.early.delete(frame.message_id);
    this.place(li, frame.seq);
  }

  status(frame) {
    const li = this.byId.get(frame.message_id);
    if (!li) {
      const list = this.early.get(frame.message_id) || [];
      list.push(frame);
      this.early.set(frame.message_id, list);
      return;
    }
    this.setStatus(li, frame.status, frame.error_code);
  }

  refused(frame) {
    const li = this.byClientId.get(frame.client_msg_id);
    if (!li || li.dataset.seq) return;
    const status = li.querySelector(".status");
    if (isRetryable(frame.code)) {
      // The socket resends it (same client_msg_id) after the wait the server named.
      li.dataset.note = frame.code;
      status.textContent = frame.code === "rate_limited"
        ? "Waiting: too many messages at once, retrying…"
        : "Waiting: the server could not store it yet, retrying…";
      return;
    }
    li.classList.remove("pending");
    li.classList.add("failed");
    li.dataset.status = "refused";
    status.textContent = REFUSALS[frame.code] || `Not sent: ${frame.message}`;
    if (frame.code === "portal_inactive") {
      // News of the account, perhaps before its `account` frame: the composer loses the
      // switch, and a refused secure text comes back to it held, never resent as SMS.
      this.account.portal_active = false;
      this.composer.setState({ portalActive: false });
      if (li.dataset.channel === "secure") {
        this.composer.holdRefused(li.querySelector(".body").textContent);
      }
    }
  }

  setStatus(li, status, errorCode) {
    if (li.dataset.direction !== "outbound" || !status) return;
    const channel = li.dataset.channel;
    // Statuses never go backwards: a late "sent" does not undo "read".
    if ((StatusRank[li.dataset.status] ?? -1) > (StatusRank[status] ?? -1)) return;
    li.dataset.status = status;
    if (errorCode) li.dataset.errorCode = errorCode;
    let text = (WORDS[channel] || {})[status] || status;
    const code = li.dataset.errorCode;
    if ((status === Status.FAILED || status === Status.UNDELIVERED) && code) {
      text += SMS_ERRORS[code] ? `: ${SMS_ERRORS[code]} (error ${code})` : ` (error ${code})`;
    }
    if (status === Status.NOT_NOTIFIED && code) {
      text = NOTIFY_ERRORS[code] || `Not notified: the text to the patient failed (error ${code})`;
    }
    li.classList.toggle("failed", status === "failed" || status === "undelivered");
    li.classList.toggle("not-notified", status === Status.NOT_NOTIFIED);
    li.querySelector(".status").textContent = text;
  }

  who(sender, direction) {
    if (!sender) return "";
    if (sender.kind === "staff" && sender.id === this.me.staff.id) return "You";
    if (sender.kind === "system") return "Automatic reply";
    if (sender.name) return sender.name;
    return direction === "inbound" ? this.summary?.patient?.display_name || "Patient"
      : "Care team";
  }

  item(direction, channel) {
    const mark = channel === "secure"
      ? h("span", { class: "mark mark-secure" }, icon("lock"), "Secure")
      : h("span", { class: "mark mark-sms" }, icon("sms"), "SMS");
    return h("li", { class: `message ${direction}`,
                     dataset: { channel, direction } },
      h("p", { class: "meta" },
        h("span", { class: "who" }), mark, h("time", {})),
      h("p", { class: "body" }),
      h("p", { class: "status" }));
  }

  place(li, seq) {
    return placeBySeq(this.list, li, seq);
  }

  // Staff notices: `link_locked` shows the lock banner with its own "Send a new link";
  // `link_resent` (from any console of the clinic) says on both buttons that it went.
  notice(frame) {
    if (frame.notice === "link_resent") {
      this.newLink.sent();
      this.lockBanner?.sent();
      return;
    }
    if (frame.notice !== "link_locked") return;
    const text = "The secure link was locked after 5 wrong date-of-birth attempts. "
      + "A new link reaches the patient by text within seconds and gives them 5 new "
      + "tries; the locked link stays locked.";
    const dismiss = h("button", { type: "button", class: "link" }, "Dismiss");
    this.lockBanner = new NewLinkButton(this.api, () => this.id);
    this.lockBanner.setState({ portalActive: this.account.portal_active,
                               patient: this.summary?.patient });
    const box = h("div", { class: "notice-banner link-locked", role: "alert" },
      h("p", {}, h("strong", {}, "Link locked. "), text),
      h("div", { class: "notice-actions" }, this.lockBanner.el, dismiss));
    dismiss.addEventListener("click", () => {
      box.remove();
      this.lockBanner = null;
      this.composer.focus();
    });
    this.notices.replaceChildren(box);
  }

  // --- sending, typing, reading ----------------------------------------------------------

  send(body, secure) {
    if (!this.id) return;
    const clientMsgId = this.socket.send(this.id, body, secure);
    this.pending(clientMsgId, body, secure);
  }

  typing() {
    const now = Date.now();
    if (this.id && now - this.lastTypingSent > TYPING_SEND_MS && this.socket.typing(this.id)) {
      this.lastTypingSent = now;
    }
  }

  showTyping(sender) {
    const name = sender?.name || this.summary?.patient?.display_name || "The patient";
    this.typingLine.textContent = `${name} is typing…`;
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => { this.typingLine.textContent = ""; }, TYPING_SHOW_MS);
  }

  // Everything on screen has been read, when the page is actually on screen.
  markRead() {
    if (!this.id || document.visibilityState !== "visible") return;
    const items = this.list.querySelectorAll("li[data-seq]");
    if (!items.length) return;
    const seq = Math.max(...[...items].map((li) => Number(li.dataset.seq)));
    if (seq > this.lastRead && this.socket.read(this.id, seq)) this.lastRead = seq;
  }

  nearEnd() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.stick = true;
  }
}
