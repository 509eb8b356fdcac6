// The wire protocol's names, mirroring server/protocol.py, server/errors.py and
// docs/protocol.md. tests/test_protocol_mirror.py holds the two in step.

export const ClientFrame = Object.freeze({
  SUBSCRIBE: "subscribe",
  UNSUBSCRIBE: "unsubscribe",
  SEND: "send",
  TYPING: "typing",
  READ: "read",
  PING: "ping",
});

export const ServerFrame = Object.freeze({
  READY: "ready",
  ACK: "ack",
  SUBSCRIBED: "subscribed",
  MESSAGE: "message",
  STATUS: "status",
  CONVERSATION: "conversation",
  TYPING: "typing",
  READ: "read",
  PRESENCE: "presence",
  NOTICE: "notice",
  ACCOUNT: "account",
  ERROR: "error",
  PONG: "pong",
});

// Message statuses (MessageStatus in server/protocol.py) and their ranks: a status only
// moves to a higher rank (a late "sent" never undoes "read"). One order for both channels.
export const Status = Object.freeze({
  QUEUED: "queued",
  SENT: "sent",
  NOTIFIED: "notified",
  NOT_NOTIFIED: "not_notified",
  DELIVERED: "delivered",
  UNDELIVERED: "undelivered",
  FAILED: "failed",
  READ: "read",
});

export const StatusRank = Object.freeze({
  queued: 0,
  sent: 1,
  notified: 2,
  not_notified: 2,
  delivered: 3,
  undelivered: 3,
  failed: 3,
  read: 4,
});

// Close codes (docs/protocol.md "Close codes"; CloseCode in server/protocol.py). Every
// code not listed in shouldReconnect's refusals is one to reconnect after.
export const Close = Object.freeze({
  UNAUTHENTICATED: 4401,
  FORBIDDEN: 4403,
  TOO_SLOW: 4408,
  RESTARTING: 1012,
  TOO_LARGE: 1009,
  UNSUPPORTED: 1003,
});

export function shouldReconnect(code) {
  return ![Close.UNAUTHENTICATED, Close.FORBIDDEN, Close.TOO_LARGE, Close.UNSUPPORTED]
    .includes(code);
}

export const ErrorCode = Object.freeze({
  INVALID_FRAME: "invalid_frame",
  INVALID_REQUEST: "invalid_request",
  UNAUTHENTICATED: "unauthenticated",
  ACCOUNT_DEACTIVATED: "account_deactivated",
  FORBIDDEN: "forbidden",
  NOT_FOUND: "not_found",
  CONFLICT: "conflict",
  RATE_LIMITED: "rate_limited",
  PORTAL_INACTIVE: "portal_inactive",
  OPTED_OUT: "opted_out",
  INVALID_VERIFICATION: "invalid_verification",
  LOCKED: "locked",
  PAYLOAD_TOO_LARGE: "payload_too_large",
  UNAVAILABLE: "unavailable",
  DATA_INTEGRITY: "data_integrity",
  INTERNAL: "internal",
});

// Refusals that mean "later, with the same client_msg_id" rather than "never".
export function isRetryable(code) {
  return code === ErrorCode.RATE_LIMITED || code === ErrorCode.UNAVAILABLE;
}
