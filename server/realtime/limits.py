"""Per-connection limits, pure and clock-driven (tested without an event loop)."""

from __future__ import annotations


class TokenBucket:
    """``burst`` frames at once, refilled at ``rate`` per second.

    ``take(now)`` spends one token and returns 0, or returns how many milliseconds to
    wait before the next frame would be accepted.
    """

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: float) -> int:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0
        return max(1, int((1 - self._tokens) / self._rate * 1000))


class Throttle:
    """At most one event per ``interval`` seconds per key (typing relays)."""

    __slots__ = ("_interval", "_last")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}

    def allow(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        self._last[key] = now
        return True
