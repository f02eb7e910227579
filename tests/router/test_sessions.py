"""MCP session affinity is bounded, and nobody can push out another's sessions."""

from __future__ import annotations

from sandboxd_router.mcp import Sessions
from sandboxd_router.upstream import Upstream

BASE, FORK_A, FORK_B = Upstream("127.0.0.1", 1), Upstream("127.0.0.1", 2), Upstream("127.0.0.1", 3)


def test_keyless_clients_filling_the_table_never_evict_a_sandbox_session() -> None:
    sessions = Sessions(limit=10)
    sessions.remember(b"a-1", FORK_A, b"sandbox=a")
    for i in range(1000):  # anyone can start baseline sessions, without a key
        sessions.remember(b"x-%d" % i, BASE, b"baseline")
    assert sessions.get(b"a-1") == (FORK_A, b"sandbox=a", None)
    assert sessions.get(b"x-999") == (BASE, b"baseline", None) and sessions.get(b"x-0") is None
    assert len(sessions) == 11


def test_a_sandbox_filling_its_share_evicts_only_its_own_sessions() -> None:
    sessions = Sessions(limit=10, per_sandbox=4)
    sessions.remember(b"b-1", FORK_B, b"sandbox=b")
    for i in range(100):
        sessions.remember(b"a-%d" % i, FORK_A, b"sandbox=a")
    assert sessions.get(b"b-1") == (FORK_B, b"sandbox=b", None)
    assert [sessions.get(b"a-%d" % i) is not None for i in range(96, 100)] == [True] * 4
    assert len(sessions) == 5


def test_sandboxes_together_stay_within_the_limit_taking_from_the_largest() -> None:
    sessions = Sessions(limit=6, per_sandbox=4)
    for i in range(4):
        sessions.remember(b"a-%d" % i, FORK_A, b"sandbox=a")
    sessions.remember(b"b-0", FORK_B, b"sandbox=b")
    sessions.remember(b"b-1", FORK_B, b"sandbox=b")
    sessions.remember(b"c-0", FORK_B, b"sandbox=c")  # full: a new sandbox takes from a's
    assert len(sessions) == 6 and sessions.get(b"a-0") is None and sessions.get(b"c-0") is not None
    sessions.remember(b"b-2", FORK_B, b"sandbox=b")  # full: b gives up its own oldest
    assert sessions.get(b"b-0") is None and sessions.get(b"a-1") is not None
    sessions.forget(b"c-0")
    sessions.keep_only({id(FORK_A)})
    assert len(sessions) == 3
