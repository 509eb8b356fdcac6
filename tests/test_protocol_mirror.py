"""The browser's copy of the protocol's names (client_web/shared/protocol.js) matches the
server's tables: error codes (server/errors.py), close codes with whether to reconnect,
message statuses with their ranks, and the frame tags of each direction
(server/protocol.py). Read as text: the file is a few frozen object literals, so a regex
is enough and no JavaScript runtime is needed."""

from __future__ import annotations

import re
import typing

import msgspec

from server.errors import ErrorCode
from server.protocol import Ack, AnyClientFrame, CloseCode, Message, MessageStatus, ServerFrame
from tests.conftest import repo_root

PROTOCOL_JS = repo_root() / "client_web" / "shared" / "protocol.js"
PROTOCOL_MD = repo_root() / "docs" / "protocol.md"


def js_object(source: str, name: str) -> dict[str, str | int]:
    """``export const NAME = Object.freeze({ KEY: "text" | 123, ... });`` as a dict."""
    match = re.search(rf"export const {name} = Object\.freeze\(\{{(.*?)\}}\);", source, re.S)
    assert match, f"protocol.js has no frozen object {name}"
    entries = re.findall(r'^\s*(\w+):\s*("[^"]*"|\d+),\s*$', match.group(1), re.M)
    body_lines = [line for line in match.group(1).splitlines()
                  if line.strip() and not line.strip().startswith("//")]
    assert len(entries) == len(body_lines), f"{name}: a line the parser cannot read"
    return {key: value.strip('"') if value.startswith('"') else int(value)
            for key, value in entries}


def js_no_reconnect(source: str) -> set[str]:
    """The ``Close`` names that ``shouldReconnect`` refuses."""
    match = re.search(r"export function shouldReconnect\(code\) \{(.*?)\n\}", source, re.S)
    assert match, "protocol.js has no shouldReconnect"
    return set(re.findall(r"Close\.(\w+)", match.group(1)))


def tag(frame: type[msgspec.Struct]) -> str:
    value = frame.__struct_config__.tag
    assert isinstance(value, str), frame
    return value


def server_frame_types() -> list[type[msgspec.Struct]]:
    """Everything the server sends on a socket: the ``ServerFrame`` family, and the two
    structs that double as HTTP bodies."""
    return [Message, Ack, *ServerFrame.__subclasses__()]


def source() -> str:
    return PROTOCOL_JS.read_text(encoding="utf-8")


def test_error_codes_match() -> None:
    assert js_object(source(), "ErrorCode") == {code.name: code.value for code in ErrorCode}


def test_close_codes_match() -> None:
    assert js_object(source(), "Close") == {code.name: code.value for code in CloseCode}


def test_reconnect_rules_match() -> None:
    assert js_no_reconnect(source()) == {code.name for code in CloseCode if not code.reconnect}


def test_statuses_match() -> None:
    assert js_object(source(), "Status") == {status.name: status.value
                                            for status in MessageStatus}


def test_status_ranks_match() -> None:
    assert js_object(source(), "StatusRank") == {status.value: status.rank
                                                for status in MessageStatus}


def test_documented_statuses_match() -> None:
    """docs/protocol.md names every status, and no other."""
    text = " ".join(PROTOCOL_MD.read_text(encoding="utf-8").split())
    sentence = text.split("Message statuses: ", 1)[1].split("(", 1)[0]
    documented = set(re.findall(r"\b[a-z_]+\b", sentence.replace("`", " ")))
    assert documented - {"sms", "secure"} == {status.value for status in MessageStatus}


def test_client_frame_tags_match() -> None:
    tags = [tag(frame) for frame in typing.get_args(AnyClientFrame)]
    assert js_object(source(), "ClientFrame") == {t.upper(): t for t in tags}


def test_server_frame_tags_match() -> None:
    tags = [tag(frame) for frame in server_frame_types()]
    assert len(set(tags)) == len(tags), tags
    assert js_object(source(), "ServerFrame") == {t.upper(): t for t in tags}


def test_documented_close_codes_match() -> None:
    """docs/protocol.md's "Close codes" table lists the same codes."""
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    section = text.split("### Close codes", 1)[1].split("\n#", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d{4}) \|", section, re.M)}
    assert documented == {int(code) for code in CloseCode}


def test_parser_reads_the_file() -> None:
    """The regexes find something (a parser that matched nothing would pass vacuously)."""
    assert js_object(source(), "ErrorCode")["INTERNAL"] == "internal"
    assert js_object(source(), "Close")["TOO_SLOW"] == 4408
    assert js_object(source(), "StatusRank")["read"] == 4
    assert "UNAUTHENTICATED" in js_no_reconnect(source())
