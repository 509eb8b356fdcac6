"""The real-time hub: local sockets, per-conversation streams and fan-out."""
