"""``services.streams.Streams`` and the tests' double satisfy ``StreamReads`` (the hub
and node are typed against the Protocol, never against the service)."""

from __future__ import annotations

import inspect

import pytest

from server.realtime.reads import StreamReads
from server.services.streams import Streams
from tests.realtime.fakes import MemoryStreams

REQUIRED = sorted(name for name, member in vars(StreamReads).items()
                  if inspect.isfunction(member) and not name.startswith("_"))


def test_the_protocol_lists_what_the_realtime_package_calls() -> None:
    assert REQUIRED == ["flush", "forget_summaries", "from_event", "mark_delivered",
                        "message_channel", "opt_out_changed", "positions", "read_positions",
                        "replay", "session_states", "summary", "touch_sessions"]


@pytest.mark.parametrize("implementation", [Streams, MemoryStreams])
@pytest.mark.parametrize("name", REQUIRED)
def test_an_implementation_has_each_method_with_its_parameters(implementation: type,
                                                               name: str) -> None:
    wanted = getattr(StreamReads, name)
    found = getattr(implementation, name, None)
    assert found is not None, f"{implementation.__name__} lacks {name}"
    assert inspect.iscoroutinefunction(found) == inspect.iscoroutinefunction(wanted)
    expected = inspect.signature(wanted).parameters
    actual = inspect.signature(found).parameters
    assert [(p.name, p.kind, p.default) for p in actual.values()] == \
        [(p.name, p.kind, p.default) for p in expected.values()]
