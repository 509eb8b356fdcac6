"""Settings: the only module that reads the environment.

Every ``SECURECHAT_*`` variable is read once, converted into one typed, frozen
:class:`Settings` struct and validated; a bad value stops start-up with a message
that names the variable and says what is wrong. Everything else receives the
struct by injection (STYLE rule 9).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

import msgspec
import phonenumbers

PREFIX = "SECURECHAT_"


class SettingsError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration of one node. Field ``x`` comes from ``SECURECHAT_X``."""

    database_url: str = "sqlite:///./data/securechat.db"
    redis_url: str | None = None
    master_key: str | None = None
    master_key_file: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    allowed_origins: tuple[str, ...] = ()
    sms_provider: Literal["simulator", "twilio"] = "simulator"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    # Region used to read phone numbers written without a country code.
    default_region: str = "US"
    # HIPAA automatic logoff (164.312(a)(2)(iii)): 15 min idle, 12 h absolute (issue 2).
    session_idle_seconds: int = 15 * 60
    session_absolute_seconds: int = 12 * 60 * 60
    # Sign-in guessing limits (docs/security.md, "Abuse limits"), each counted over
    # `login_lock_seconds` and locking for as long: five failures for one email from one
    # address (issue 2); 20 from one address across emails (a clinic's shared address
    # absorbs a morning of typos; a guesser spraying emails stops after 20); 50 for one
    # email from anywhere (half NIST 800-63B's ceiling of 100, and ten addresses' worth,
    # so a distributed guesser is slowed while a single one cannot lock a colleague out).
    login_max_failures: int = 5
    login_max_address_failures: int = 20
    login_max_email_failures: int = 50
    login_lock_seconds: int = 15 * 60
    # argon2id: at most this many hashes at once (each holds PASSWORD_HASH_MEMORY_KIB) and
    # this many waiting.
    password_hash_concurrency: int = 2
    password_hash_queue: int = 32
    # argon2id cost of a new hash: argon2-cffi's defaults, RFC 9106's low-memory profile
    # (64 MiB, 3 passes, 4 lanes). Verifying reads the cost from the stored hash, so a
    # change never locks anyone out; a hash of another cost is redone at its next sign-in.
    # argon2 needs 8 KiB per lane: less fails start-up (the first hash is made there).
    password_hash_memory_kib: int = 64 * 1024
    password_hash_time_cost: int = 3
    password_hash_parallelism: int = 4
    # How long a node trusts its cached "active data key" before asking the store again,
    # so `securechat rotate-key` reaches running nodes within this many seconds.
    key_refresh_seconds: int = 60
    # WebSocket frames per connection: a token bucket of this rate and burst. 20/s with
    # a burst of 40 is far above a person typing and reading, and caps a runaway client.
    ws_rate_per_second: float = 20.0
    ws_rate_burst: int = 40
    # A socket's outbound queue; past either bound it is closed with 4408 and resumes.
    # 1,000 frames or 1 MiB is ~10 s of a busy thread for a client that has stalled.
    ws_outbox_frames: int = 1000
    ws_outbox_bytes: int = 1024 * 1024
    # Open WebSockets per client address on one node (checklist DOS-01: 100); over it the
    # handshake is refused with HTTP 429. Behind a proxy, see docs/security.md.
    ws_max_per_address: int = 100
    # How often a node compares its streams' positions with the store, repairing any
    # publication the broker lost (and carrying delivery while the broker is down).
    sync_interval_seconds: float = 5.0
    # How often live sockets' sessions are re-checked (idle, absolute, logout, disable).
    ws_session_check_seconds: float = 15.0
    # SMS outbox retries: exponential backoff from this base (seconds, full jitter,
    # capped at 5 min) for at most this many attempts (8 ≈ 4 min of retries at 2 s).
    sms_retry_base_seconds: float = 2.0
    sms_max_attempts: int = 8
    # At most one "you have a secure message" SMS per conversation in this window while
    # earlier ones are unread (issue 4: 10 minutes).
    notify_window_seconds: int = 600
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Host names a request may name besides PUBLIC_URL's, ALLOWED_ORIGINS' and the
    # loopback names (a port is ignored): anything else is refused (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()
    # `Authorization: Bearer <token>` that /metrics requires. Unset: /metrics answers only
    # loopback clients of `securechat demo`, and nobody under `serve`.
    metrics_token: str | None = None
    # Set by `securechat demo` only: creates the master key file and enables dev pages.
    demo: bool = False

    def __post_init__(self) -> None:
        _check_url("database_url", self.database_url, ("sqlite", "postgresql", "postgres"))
        if self.redis_url is not None:
            _check_url("redis_url", self.redis_url, ("redis", "rediss", "unix"))
        _check_url("public_url", self.public_url, ("http", "https"), need_host=True)
        _check_url("twilio_api_base", self.twilio_api_base, ("http", "https"), need_host=True)
        for origin in self.allowed_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise SettingsError(
                    f"{PREFIX}ALLOWED_ORIGINS: {origin!r} is not an origin "
                    "(scheme://host[:port], no path)"
                )
        for host in self.allowed_hosts:
            if not _HOST.match(host):
                raise SettingsError(f"{PREFIX}ALLOWED_HOSTS: {host!r} is not a host name "
                                    "(host or host:port, no scheme)")
        if self.metrics_token is not None and len(self.metrics_token) < MIN_METRICS_TOKEN:
            raise SettingsError(f"{PREFIX}METRICS_TOKEN: must be at least {MIN_METRICS_TOKEN} "
                                "characters (e.g. `openssl rand -hex 32`)")
        if self.sms_provider == "twilio":
            for name in ("twilio_account_sid", "twilio_auth_token", "twilio_from"):
                if not getattr(self, name):
                    raise SettingsError(
                        f"{PREFIX}{name.upper()}: required when {PREFIX}SMS_PROVIDER=twilio"
                    )
        for name in ("ws_rate_per_second", "sync_interval_seconds", "ws_session_check_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{PREFIX}{name.upper()}: must be above 0")
        if self.password_hash_queue < 0:
            raise SettingsError(f"{PREFIX}PASSWORD_HASH_QUEUE: must be at least 0")
        if self.default_region not in phonenumbers.SUPPORTED_REGIONS:
            raise SettingsError(f"{PREFIX}DEFAULT_REGION: {self.default_region!r} is not a "
                                "region code such as US or GB")
        for name in ("session_idle_seconds", "session_absolute_seconds", "login_lock_seconds",
                     "login_max_failures", "login_max_address_failures",
                     "login_max_email_failures", "password_hash_concurrency",
                     "password_hash_memory_kib", "password_hash_time_cost",
                     "password_hash_parallelism", "key_refresh_seconds",
                     "ws_rate_burst", "ws_outbox_frames", "ws_outbox_bytes",
                     "ws_max_per_address"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()}: must be at least 1")

    @property
    def secure_cookies(self) -> bool:
        """Cookies get ``Secure`` (and the ``__Host-`` prefix) when served over https."""
        return urlsplit(self.public_url).scheme == "https"

    @property
    def origins(self) -> frozenset[str]:
        """Origins allowed on WebSocket handshakes and state-changing requests."""
        if self.allowed_origins:
            return frozenset(origin.lower() for origin in self.allowed_origins)
        parts = urlsplit(self.public_url)
        return frozenset({f"{parts.scheme}://{parts.netloc.lower()}"})


    @property
    def hosts(self) -> frozenset[str]:
        """Host names a request's ``Host`` may carry (lower case, ports ignored):
        PUBLIC_URL's, ALLOWED_ORIGINS', ALLOWED_HOSTS and the loopback names. A browser
        sends its page's own host, so a rebinding page (evil.example resolving here) can
        never send a loopback name: allowing them always keeps probes and local tools
        working without opening that door. The port is no defence against rebinding
        (the attacker's page can use ours), and proxies often drop it."""
        names = set(LOOPBACK_HOSTS)
        names.update(host_name(urlsplit(url).netloc)
                     for url in (self.public_url, *self.allowed_origins))
        names.update(host_name(host) for host in self.allowed_hosts)
        return frozenset(names)


def host_name(host: str) -> str:
    """``host[:port]`` → ``host``, lower case (an IPv6 literal keeps its brackets)."""
    host = host.lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] or host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


# A bare host or host:port (an IPv6 literal in brackets); no scheme, path or user.
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# 16 characters of a random token is at least 64 bits even in hex.
MIN_METRICS_TOKEN = 16


def _check_url(field: str, value: str, schemes: tuple[str, ...], need_host: bool = False) -> None:
    parts = urlsplit(value)
    if parts.scheme.split("+")[0] not in schemes or (need_host and not parts.hostname):
        raise SettingsError(
            f"{PREFIX}{field.upper()}: {value!r} is not a valid URL; "
            f"expected one starting with {' or '.join(s + '://' for s in schemes)}"
        )


_FIELDS = {name: name.upper() for name in Settings.__struct_fields__}
_LIST_FIELDS = {"allowed_origins", "allowed_hosts"}
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def from_env(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build :class:`Settings` from ``SECURECHAT_*`` variables plus explicit overrides.

    Raises:
        SettingsError: a variable is unknown, malformed or inconsistent; the message
            names it.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    for key, value in environ.items():
        if not key.startswith(PREFIX):
            continue
        field = key[len(PREFIX):].lower()
        if field not in _FIELDS:
            raise SettingsError(f"{key}: unknown setting (known: {', '.join(sorted(_FIELDS))})")
        if field in _LIST_FIELDS:
            raw[field] = [part.strip() for part in value.split(",") if part.strip()]
        elif field == "demo":
            if value.lower() not in _BOOL_WORDS:
                raise SettingsError(f"{key}: expected true or false, got {value!r}")
            raw[field] = _BOOL_WORDS[value.lower()]
        else:
            raw[field] = value
    raw.update(overrides)
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc))) from None


def env_has(field: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``SECURECHAT_<FIELD>`` is set (so a command's own default must yield)."""
    environ = os.environ if environ is None else environ
    return f"{PREFIX}{field.upper()}" in environ


def _explain(message: str) -> str:
    """Turn msgspec's "... - at `$.field`" into "SECURECHAT_FIELD: ..."."""
    text, sep, where = message.rpartition(" - at `$.")
    if not sep:
        return message
    field = where.rstrip("`").split("[")[0].split(".")[0]
    return f"{PREFIX}{field.upper()}: {text}"
