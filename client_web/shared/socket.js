// The chat socket shared by the patient page and the staff console.
//
// * Reconnects by itself with exponential backoff and full jitter (0.5 s doubling to
//   30 s), except after a close that means "sign in again" (4401) or a client bug.
// * Resumes by position: each followed conversation remembers the last seq it showed and
//   re-subscribes with after_seq, so nothing is lost or shown twice across a drop.
// * Sends are kept until acknowledged: a message typed while offline goes out once on
//   reconnect, with the same client_msg_id (the server answers a resend with the same ack).
import { ClientFrame, ServerFrame, ErrorCode, shouldReconnect } from "./protocol.js";

const BACKOFF_START_MS = 500;
const BACKOFF_CAP_MS = 30000;

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
    this.stopped = false;
    this.positions = new Map(); // conversation id -> last seq shown
    this.unacked = new Map(); // client_msg_id -> send frame
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000);
  }

  connect() {
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.onState("online");
    };
    ws.onmessage = (event) => this.receive(JSON.parse(event.data));
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (!shouldReconnect(event.code)) {
        this.onState(event.code === 4401 ? "signed_out" : "closed", event.code);
        return;
      }
      this.onState("offline", event.code);
      const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** this.attempt);
      this.attempt += 1;
      setTimeout(() => this.connect(), Math.random() * ceiling);
    };
  }

  receive(frame) {
    switch (frame.type) {
      case ServerFrame.READY:
        this.onFrame(frame);
        // Resume every followed conversation, then resend what was never acknowledged.
        for (const [conversationId, lastSeq] of this.positions) {
          this.write({ type: ClientFrame.SUBSCRIBE, conversation_id: conversationId,
                       after_seq: lastSeq });
        }
        for (const pending of this.unacked.values()) this.write(pending);
        return;
      case ServerFrame.MESSAGE: {
        const last = this.positions.get(frame.conversation_id) ?? 0;
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
        // A refused send is not retried (except when the server asks to resend later).
        if (frame.client_msg_id && frame.code !== ErrorCode.RATE_LIMITED
            && frame.code !== ErrorCode.UNAVAILABLE) {
          this.unacked.delete(frame.client_msg_id);
        }
        this.onFrame(frame);
        return;
      default:
        this.onFrame(frame);
    }
  }

  follow(conversationId) {
    if (!this.positions.has(conversationId)) this.positions.set(conversationId, 0);
    this.write({ type: ClientFrame.SUBSCRIBE, conversation_id: conversationId,
                 after_seq: this.positions.get(conversationId) });
  }

  send(conversationId, body, secure) {
    const frame = { type: ClientFrame.SEND, conversation_id: conversationId,
                    client_msg_id: newClientMsgId(), body, secure };
    this.unacked.set(frame.client_msg_id, frame);
    this.write(frame);
    return frame.client_msg_id;
  }

  typing(conversationId) {
    this.write({ type: ClientFrame.TYPING, conversation_id: conversationId });
  }

  read(conversationId, seq) {
    this.write({ type: ClientFrame.READ, conversation_id: conversationId, seq });
  }

  write(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
    }
  }
}
