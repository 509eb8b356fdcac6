"""Settings: every SECURECHAT_* variable is typed, validated, and errors name the variable."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from server.settings import PREFIX, Settings, SettingsError, from_env

TWILIO_CREDENTIALS = {
    "SECURECHAT_TWILIO_ACCOUNT_SID": "AC00000000000000000000000000000000",
    "SECURECHAT_TWILIO_AUTH_TOKEN": "test-token",
    "SECURECHAT_TWILIO_FROM": "+15005550006",
}
INT_FIELDS = [name for name, kind in zip(Settings.__struct_fields__,
                                         msgspec.structs.fields(Settings), strict=True)
              if kind.type is int]


def settings_error(env: dict[str, str]) -> str:
    """The message of the SettingsError that ``env`` must raise."""
    with pytest.raises(SettingsError) as info:
        from_env(env)
    return str(info.value)


# --- defaults -------------------------------------------------------------------------------

def test_defaults_are_the_documented_ones() -> None:
    """HIPAA logoff (15 min idle, 12 h absolute), 5 failures / 15 min lock, simulator SMS."""
    s = Settings()
    assert s.session_idle_seconds == 15 * 60
    assert s.session_absolute_seconds == 12 * 60 * 60
    assert s.login_max_failures == 5
    assert s.login_lock_seconds == 15 * 60
    assert s.sms_provider == "simulator"
    assert s.public_url == "http://127.0.0.1:8000"
    assert s.default_region == "US"
    assert s.allowed_origins == ()
    assert s.demo is False
    assert s.log_level == "INFO"
    assert s.master_key is None and s.master_key_file is None


def test_empty_environment_gives_the_defaults() -> None:
    """from_env({}) starts with no configuration at all."""
    assert from_env({}) == Settings()


def test_variables_without_the_prefix_are_ignored() -> None:
    """Only SECURECHAT_* variables are read; the rest of the environment is not ours."""
    assert from_env({"PATH": "/usr/bin", "SECURECHATX": "1", "HOME": "/root"}) == Settings()


def test_settings_are_frozen() -> None:
    """Nothing can change the configuration after start-up."""
    s = from_env({})
    with pytest.raises(AttributeError):
        s.demo = True  # type: ignore[misc]


def test_overrides_win_over_the_environment() -> None:
    """Explicit keyword overrides (used by `securechat demo`) beat the variables."""
    s = from_env({"SECURECHAT_DEMO": "false", "SECURECHAT_LOG_LEVEL": "ERROR"}, demo=True)
    assert s.demo is True
    assert s.log_level == "ERROR"


# --- parsing --------------------------------------------------------------------------------

def test_integer_variables_are_converted() -> None:
    """Numbers arrive as text and become ints."""
    s = from_env({"SECURECHAT_SESSION_IDLE_SECONDS": "60",
                  "SECURECHAT_PASSWORD_HASH_CONCURRENCY": "4"})
    assert s.session_idle_seconds == 60
    assert s.password_hash_concurrency == 4


@hypothesis_settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(INT_FIELDS), value=st.integers(min_value=1, max_value=10**9))
def test_any_positive_integer_round_trips(field: str, value: int) -> None:
    """Every integer setting accepts any positive decimal number."""
    s = from_env({PREFIX + field.upper(): str(value)})
    assert getattr(s, field) == value


def test_allowed_origins_is_a_comma_list() -> None:
    """SECURECHAT_ALLOWED_ORIGINS: comma separated, blanks and empty items dropped."""
    s = from_env({"SECURECHAT_ALLOWED_ORIGINS":
                  " https://a.example , https://b.example:8443,,http://localhost:3000 ,"})
    assert s.allowed_origins == ("https://a.example", "https://b.example:8443",
                                 "http://localhost:3000")
    assert s.origins == frozenset(s.allowed_origins)


def test_origins_default_to_the_public_url_origin() -> None:
    """Without SECURECHAT_ALLOWED_ORIGINS only PUBLIC_URL's scheme://host:port is allowed."""
    s = from_env({"SECURECHAT_PUBLIC_URL": "https://chat.example.org:8443/clinic/"})
    assert s.origins == frozenset({"https://chat.example.org:8443"})
    assert from_env({}).origins == frozenset({"http://127.0.0.1:8000"})


def test_allowed_origins_replace_the_default_origin() -> None:
    """An explicit origin list is the whole list: PUBLIC_URL is not added to it."""
    s = from_env({"SECURECHAT_PUBLIC_URL": "https://chat.example.org",
                  "SECURECHAT_ALLOWED_ORIGINS": "https://portal.example.org"})
    assert s.origins == frozenset({"https://portal.example.org"})


@pytest.mark.parametrize(("word", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True),
    ("0", False), ("false", False), ("No", False),
])
def test_demo_accepts_boolean_words(word: str, expected: bool) -> None:
    """SECURECHAT_DEMO takes the usual true/false spellings, case-insensitively."""
    assert from_env({"SECURECHAT_DEMO": word}).demo is expected


def test_twilio_with_all_credentials_is_accepted() -> None:
    """The twilio provider starts when its three credentials are present."""
    s = from_env({"SECURECHAT_SMS_PROVIDER": "twilio", **TWILIO_CREDENTIALS})
    assert s.sms_provider == "twilio"
    assert s.twilio_from == "+15005550006"


@pytest.mark.parametrize(("url", "secure"), [
    ("https://chat.example.org", True),
    ("https://chat.example.org:8443/app", True),
    ("http://chat.example.org", False),
    ("http://127.0.0.1:8000", False),
])
def test_secure_cookies_only_over_https(url: str, secure: bool) -> None:
    """Cookies are marked Secure exactly when the public URL is https."""
    assert from_env({"SECURECHAT_PUBLIC_URL": url}).secure_cookies is secure


def test_secure_cookies_for_an_uppercase_https_scheme() -> None:
    """URL schemes are case-insensitive; HTTPS:// is accepted, so it must mean Secure too."""
    assert from_env({"SECURECHAT_PUBLIC_URL": "HTTPS://chat.example.org"}).secure_cookies


# --- errors name the variable -------------------------------------------------------------

def test_unknown_variable_is_rejected_by_name() -> None:
    """A typo such as SECURECHAT_FOO stops start-up instead of being silently ignored."""
    message = settings_error({"SECURECHAT_FOO": "1"})
    assert message.startswith("SECURECHAT_FOO:")
    assert "unknown setting" in message


@hypothesis_settings(max_examples=100, deadline=None)
@given(suffix=st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True)
       .filter(lambda s: s.lower() not in Settings.__struct_fields__))
def test_any_unknown_variable_is_rejected_by_name(suffix: str) -> None:
    """Every SECURECHAT_* name that is not a field is refused, naming that variable."""
    name = PREFIX + suffix
    assert settings_error({name: "x"}).startswith(f"{name}:")


@pytest.mark.parametrize("url", [
    "chat.example.org", "ftp://chat.example.org", "https://", "not a url", "",
])
def test_bad_public_url_names_the_variable(url: str) -> None:
    """SECURECHAT_PUBLIC_URL must be an http(s) URL with a host."""
    message = settings_error({"SECURECHAT_PUBLIC_URL": url})
    assert message.startswith("SECURECHAT_PUBLIC_URL:")
    assert "http://" in message  # says what is expected


@pytest.mark.parametrize("value", ["abc", "1.5", "", " 60", "15m"])
def test_non_integer_seconds_names_the_variable(value: str) -> None:
    """A non-integer number is reported against its variable (msgspec's "$.field" rewritten).

    msgspec's own text is "Expected `int`, got `str` - at `$.session_idle_seconds`".
    """
    message = settings_error({"SECURECHAT_SESSION_IDLE_SECONDS": value})
    assert message.startswith("SECURECHAT_SESSION_IDLE_SECONDS:")
    assert "int" in message
    assert "$." not in message


@pytest.mark.parametrize("field", INT_FIELDS)
def test_every_integer_variable_names_itself_when_malformed(field: str) -> None:
    """The rewrite of msgspec's path works for every integer field, not just one."""
    name = PREFIX + field.upper()
    assert settings_error({name: "twelve"}).startswith(f"{name}:")


@pytest.mark.parametrize("name", [
    "SECURECHAT_SESSION_IDLE_SECONDS", "SECURECHAT_SESSION_ABSOLUTE_SECONDS",
    "SECURECHAT_LOGIN_MAX_FAILURES", "SECURECHAT_LOGIN_LOCK_SECONDS",
    "SECURECHAT_PASSWORD_HASH_CONCURRENCY", "SECURECHAT_KEY_REFRESH_SECONDS",
    "SECURECHAT_PASSWORD_HASH_MEMORY_KIB", "SECURECHAT_PASSWORD_HASH_TIME_COST",
    "SECURECHAT_PASSWORD_HASH_PARALLELISM",
])
def test_zero_is_refused_where_a_positive_number_is_needed(name: str) -> None:
    """A zero timeout or zero concurrency would disable a control: refused."""
    message = settings_error({name: "0"})
    assert message == f"{name}: must be at least 1"


def test_negative_password_hash_queue_is_refused() -> None:
    """A negative queue length is a configuration error, not a silent lock-out."""
    assert settings_error({"SECURECHAT_PASSWORD_HASH_QUEUE": "-5"}).startswith(
        "SECURECHAT_PASSWORD_HASH_QUEUE:")


@pytest.mark.parametrize("missing", sorted(TWILIO_CREDENTIALS))
def test_twilio_without_a_credential_names_it(missing: str) -> None:
    """SMS_PROVIDER=twilio needs every Twilio credential; the missing one is named."""
    env = {"SECURECHAT_SMS_PROVIDER": "twilio", **TWILIO_CREDENTIALS}
    del env[missing]
    message = settings_error(env)
    assert message.startswith(f"{missing}:")
    assert "SECURECHAT_SMS_PROVIDER=twilio" in message


def test_twilio_without_any_credentials_names_a_variable() -> None:
    """The bare SECURECHAT_SMS_PROVIDER=twilio case from a fresh install."""
    message = settings_error({"SECURECHAT_SMS_PROVIDER": "twilio"})
    assert message.startswith("SECURECHAT_TWILIO_")


@pytest.mark.parametrize("origin", [
    "https://a.example/chat", "https://a.example/", "a.example", "ftp://a.example", "https://",
])
def test_an_origin_that_is_not_an_origin_is_refused(origin: str) -> None:
    """An allowed origin is scheme://host[:port] only; a path would never match a browser."""
    message = settings_error({"SECURECHAT_ALLOWED_ORIGINS": f"https://ok.example,{origin}"})
    assert message.startswith("SECURECHAT_ALLOWED_ORIGINS:")
    assert repr(origin) in message


@pytest.mark.parametrize(("name", "value"), [
    ("SECURECHAT_SMS_PROVIDER", "carrier-pigeon"),
    ("SECURECHAT_LOG_LEVEL", "LOUD"),
    ("SECURECHAT_DEMO", "maybe"),
    ("SECURECHAT_DATABASE_URL", "mysql://db/securechat"),
    ("SECURECHAT_REDIS_URL", "http://cache:6379"),
    ("SECURECHAT_TWILIO_API_BASE", "api.twilio.com"),
])
def test_other_bad_values_name_their_variable(name: str, value: str) -> None:
    """Enums, booleans and the other URLs are also reported against their variable."""
    assert settings_error({name: value}).startswith(f"{name}:")


def test_errors_are_value_errors() -> None:
    """SettingsError is a ValueError, so generic start-up handlers still catch it."""
    with pytest.raises(ValueError, match="SECURECHAT_LOG_LEVEL"):
        from_env({"SECURECHAT_LOG_LEVEL": "LOUD"})
