"""MCP awareness: session affinity (sessionful era) and `params._meta.baggage` in a body."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from sandboxd_router.baggage import find_key
from sandboxd_router.upstream import Upstream

MAX_SESSIONS = 100_000
PER_SANDBOX = 10_000
BASELINE = b"baseline"


class Sessions:
    """`Mcp-Session-Id` → where its `initialize` went (upstream and route decision).

    Bounded, and partitioned so that nobody evicts another's sessions: the baseline's (which
    anyone can start, without a key) and each sandbox's are kept apart, and a full group drops
    its own oldest — the baseline's at `limit` sessions, a sandbox's at `per_sandbox`. The
    sandboxes together hold at most `limit`: past it a sandbox gives up its own oldest, and one
    with none yet takes the oldest of the largest sandbox's.
    """

    def __init__(self, *, limit: int = MAX_SESSIONS, per_sandbox: int = PER_SANDBOX) -> None:
        self._where: dict[bytes, tuple[Upstream, bytes, str | None]] = {}
        self._groups: dict[bytes, OrderedDict[bytes, None]] = {}  # decision → oldest first
        self._limit = limit
        self._per_sandbox = per_sandbox
        self._in_sandboxes = 0

    def get(self, session: bytes) -> tuple[Upstream, bytes, str | None] | None:
        """Where the session started: upstream, route decision, and the sandbox whose key it
        carried (forked or not: its faults follow the session)."""
        return self._where.get(session)

    def remember(
        self, session: bytes, upstream: Upstream, decision: bytes, sandbox: str | None = None
    ) -> None:
        self.forget(session)
        baseline = decision == BASELINE
        group = self._groups.get(decision)
        size = len(group) if group is not None else 0
        if size >= (self._limit if baseline else self._per_sandbox):
            self._drop_oldest(decision)
        elif not baseline and self._in_sandboxes >= self._limit:
            self._drop_oldest(decision if size else self._largest())
        self._groups.setdefault(decision, OrderedDict())[session] = None
        self._where[session] = (upstream, decision, sandbox)
        if not baseline:
            self._in_sandboxes += 1

    def forget(self, session: bytes) -> None:
        hit = self._where.pop(session, None)
        if hit is None:
            return
        decision = hit[1]
        group = self._groups[decision]
        del group[session]
        if not group:
            del self._groups[decision]
        if decision != BASELINE:
            self._in_sandboxes -= 1

    def keep_only(self, live: set[int]) -> None:
        """After a table swap: drop sessions whose upstream is no longer routed to."""
        for session in [s for s, (u, _, _) in self._where.items() if id(u) not in live]:
            self.forget(session)

    def _drop_oldest(self, decision: bytes) -> None:
        self.forget(next(iter(self._groups[decision])))

    def _largest(self) -> bytes:
        sandboxes = [d for d in self._groups if d != BASELINE]
        return max(sandboxes, key=lambda d: len(self._groups[d]))

    def __len__(self) -> int:
        return len(self._where)


def key_from_body(body: bytes, key: bytes) -> str | None:
    """The routing key in `params._meta.baggage` of a JSON-RPC message (or of the first message
    of a batch that has one); None when the body is not such JSON. Never raises: a body nested
    past the parser's depth (RecursionError), a number past int's digit limit, invalid UTF-8
    or a lone surrogate in the baggage all carry no key."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
        return None
    for item in message if isinstance(message, list) else [message]:
        baggage = _meta_baggage(item)
        if baggage is not None:
            return find_key([baggage.encode(errors="surrogatepass")], key)
    return None


def _meta_baggage(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    baggage = meta.get("baggage") if isinstance(meta, dict) else None
    return baggage if isinstance(baggage, str) else None
