"""A count per client address on this node (pure; one event loop, so no lock): open
WebSockets (server/web/ws.py) and sign-ins waiting for a hash (server/sign_in_limits.py).

One machine opening thousands of sockets would take a node's file descriptors and
memory from everyone else (checklist DOS-01: 100 per address). The address is the one
the ASGI server reports: behind a TLS proxy it is the proxy's unless uvicorn is told to
trust the proxy's ``X-Forwarded-For`` (``--proxy-headers``, ``FORWARDED_ALLOW_IPS``).
"""

from __future__ import annotations


class AddressLimit:
    """At most ``cap`` open sockets per address; ``acquire`` before accepting, and
    ``release`` exactly once for each successful ``acquire``."""

    __slots__ = ("_cap", "_open")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._open: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """Count one more socket for ``address``; False (and nothing counted) at the cap."""
        count = self._open.get(address, 0)
        if count >= self._cap:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)

    def open(self, address: str) -> int:
        """Sockets counted for ``address`` now."""
        return self._open.get(address, 0)
