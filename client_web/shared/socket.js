// The chat socket shared by the patient page and the staff console.
//
// * Reconnects by itself with exponential backoff and full jitter (0.5 s doubling to
//   30 s), except after a close that means "sign in again" (4401) or a client bug. The
//   backoff restarts only after a good handshake (`ready`), so a server that accepts and
//   drops at once is not hammered; the browser coming back online retries at once.
// * Notices a dead connection: a `ping` every 25 s; no frame at all within 10 s of it
//   and the socket is dropped and reconnected (pings are not user activity, so they do
//   not keep a session alive).
// * Resumes by position: each followed conversation remembers the last seq it showed and
//   re-subscribes with after_seq, so nothing is lost or shown twice across a drop.
// * Sends are kept until acknowledged: a message typed while offline goes out once on
//   reconnect, with the same client_msg_id (the server answers a resend with the same
//   ack); `rate_limited` and `unavailable` refusals are resent after the wait they name.
import { ClientFrame, ServerFrame, Close, isRetryable, shouldReconnect } from "./protocol.js";

const BACKOFF_START_MS = 500;
const BACKOFF_CAP_MS = 30000;
const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;
const RESEND_DEFAULT_MS = 1000;

export function newClientMsgId() {
  return crypto.randomUUID();
}

export class ChatSocket {
  constructor({ url, onFrame, onState }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onState = onState;
    this.ws = null;
    this.attempt = 0;
    this.stopped = true;
    this.retryTimer = null;
    this.pingTimer = null;
    this.deadTimer = null;
    this.positions = new Map(); // conversation id -> last seq shown
    this.unacked = new Map(); // client_msg_id -> send frame
    this.onOnline = () => {
      if (!this.ws && !this.stopped) this.reconnectNow();
    };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    this.stopHeartbeat();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
  }

  connect() {
    if (this.stopped) return;
    this.retryTimer = null;
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws === ws) this.startHeartbeat();
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.alive();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours to guess at
      }
      this.receive(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return; // already replaced (dropped as dead, or stopped)
      this.ws = null;
      this.stopHeartbeat();
      if (this.stopped) return;
      if (!shouldReconnect(event.code)) {
        this.stopped = true;
        this.onState(event.code === Close.UNAUTHENTICATED ? "signed_out" : "closed",
                     event.code);
        return;
      }
      this.scheduleReconnect(event.code);
    };
  }

  scheduleReconnect(code) {
    this.onState("offline", code);
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** this.attempt);
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), Math.random() * ceiling);
  }

  reconnectNow() {
    clearTimeout(this.retryTimer);
    this.connect();
  }

  // A connection that stopped answering: forget it and reconnect (its close handshake
  // could take minutes on a dead network).
  drop() {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    this.stopHeartbeat();
    ws.close(4000);
    this.scheduleReconnect(1006);
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.pingTimer = setInterval(() => {
      if (this.write({ type: ClientFrame.PING }) && !this.deadTimer) {
        this.deadTimer = setTimeout(() => this.drop(), PONG_WITHIN_MS);
      }
    }, PING_EVERY_MS);
  }

  stopHeartbeat() {
    clearInterval(this.pingTimer);
    clearTimeout(this.deadTimer);
    this.pingTimer = null;
    this.deadTimer = null;
  }

  alive() {
    clearTimeout(this.deadTimer);
    this.deadTimer = null;
  }

  receive(frame) {
    switch (frame.type) {
      case ServerFrame.READY:
        this.attempt = 0;
        this.onState("online");
        // Resume every followed conversation and resend what was never acknowledged,
        // before the page hears of the new connection (a conversation it follows in
        // answer is subscribed once, not twice).
        for (const [conversationId, lastSeq] of this.positions) {
          this.write({ type: ClientFrame.SUBSCRIBE, conversation_id: conversationId,
                       after_seq: lastSeq });
        }
        for (const pending of this.unacked.values()) this.write(pending);
        this.onFrame(frame);
        return;
      case ServerFrame.MESSAGE: {
        // A conversation no longer followed (a frame still in flight when it was left)
        // is dropped: taking its position would resubscribe it on the next reconnect.
        if (!this.positions.has(frame.conversation_id)) return;
        const last = this.positions.get(frame.conversation_id);
        if (frame.seq <= last) return; // already shown
        this.positions.set(frame.conversation_id, frame.seq);
        this.unacked.delete(frame.client_msg_id);
        this.onFrame(frame);
        return;
      }
      case ServerFrame.ACK:
        this.unacked.delete(frame.client_msg_id);
        this.onFrame(frame);
        return;
      case ServerFrame.ERROR:
        if (frame.client_msg_id && this.unacked.has(frame.client_msg_id)) {
          if (isRetryable(frame.code)) {
            this.resendLater(frame.client_msg_id, frame.retry_after_ms);
          } else {
            this.unacked.delete(frame.client_msg_id); // refused for good: not retried
          }
        }
        this.onFrame(frame);
        return;
      default:
        this.onFrame(frame);
    }
  }

  resendLater(clientMsgId, afterMs) {
    setTimeout(() => {
      const pending = this.unacked.get(clientMsgId);
      if (pending) this.write(pending); // if offline, the next `ready` resends it
    }, Math.max(afterMs || RESEND_DEFAULT_MS, 100));
  }

  // Follow a conversation from `afterSeq` on: the page already shows everything up to it
  // (e.g. a history page read over HTTP), so the replay starts after it and nothing is
  // shown twice. Following one already followed changes nothing.
  follow(conversationId, afterSeq = 0) {
    if (this.positions.has(conversationId)) return;
    this.positions.set(conversationId, afterSeq);
    this.write({ type: ClientFrame.SUBSCRIBE, conversation_id: conversationId,
                 after_seq: afterSeq });
  }

  // Stop following: no live messages, and no resubscribe after a reconnect.
  unfollow(conversationId) {
    if (!this.positions.delete(conversationId)) return;
    this.write({ type: ClientFrame.UNSUBSCRIBE, conversation_id: conversationId });
  }

  // The sends of a conversation not yet acknowledged (kept, and resent on reconnect).
  pending(conversationId) {
    return [...this.unacked.values()].filter((f) => f.conversation_id === conversationId);
  }

  get online() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN);
  }

  send(conversationId, body, secure) {
    const frame = { type: ClientFrame.SEND, conversation_id: conversationId,
                    client_msg_id: newClientMsgId(), body, secure };
    this.unacked.set(frame.client_msg_id, frame);
    this.write(frame);
    return frame.client_msg_id;
  }

  typing(conversationId) {
    return this.write({ type: ClientFrame.TYPING, conversation_id: conversationId });
  }

  read(conversationId, seq) {
    return this.write({ type: ClientFrame.READ, conversation_id: conversationId, seq });
  }

  // Whether the frame went out (false while offline).
  write(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }
}
