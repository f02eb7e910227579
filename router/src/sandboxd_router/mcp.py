"""MCP awareness: session affinity (sessionful era) and `params._meta.baggage` in a body."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from sandboxd_router.baggage import find_key
from sandboxd_router.pool import Upstream

MAX_SESSIONS = 100_000


class Sessions:
    """`Mcp-Session-Id` → where its `initialize` went (upstream and route decision)."""

    def __init__(self, *, limit: int = MAX_SESSIONS) -> None:
        self._map: OrderedDict[bytes, tuple[Upstream, bytes]] = OrderedDict()
        self._limit = limit

    def get(self, session: bytes) -> tuple[Upstream, bytes] | None:
        return self._map.get(session)

    def remember(self, session: bytes, upstream: Upstream, decision: bytes) -> None:
        self._map[session] = (upstream, decision)
        if len(self._map) > self._limit:
            self._map.popitem(last=False)

    def forget(self, session: bytes) -> None:
        self._map.pop(session, None)

    def keep_only(self, live: set[int]) -> None:
        """After a table swap: drop sessions whose upstream is no longer routed to."""
        for session in [s for s, (u, _) in self._map.items() if id(u) not in live]:
            del self._map[session]

    def __len__(self) -> int:
        return len(self._map)


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
