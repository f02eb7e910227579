"""Live updates of a page as server-sent events: the sections that changed, re-rendered.

Why fragments and not data: the page's sections come from the templates (`sandboxd.web.render`)
and an update is the same rendering, so JavaScript only swaps a section's HTML in and never
builds markup itself (nothing to escape twice, one place that decides what a fork or a fault
looks like).

Each event's `id` is the digest of every section as the client then has it (8 hex characters
per section, in `SECTIONS` order). A client that reconnects sends it back (`Last-Event-ID`,
or `?since=` from the page it loaded) and gets exactly the sections that differ: a resume
needs no state on the server and survives a restart of it. The stream looks again every
`INTERVAL` seconds (a change shows within about that), sends `: ping` after `HEARTBEAT`
seconds of silence (so proxies keep it open), and ends after `LIFETIME` seconds: the browser
reconnects with its last id, and a link or session that lapsed meanwhile is refused then.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from sandboxd.web.render import SECTIONS

INTERVAL = 1.0
HEARTBEAT = 15.0
LIFETIME = 600.0
_DIGEST = 8
_ID = re.compile(rf"^[0-9a-f]{{{_DIGEST}}}(-[0-9a-f]{{{_DIGEST}}}){{{len(SECTIONS) - 1}}}$")
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True, slots=True)
class Seen:
    """One look at the page: its sections, and whether the sandbox is deleted; None sections:
    the viewer may no longer see it (the stream ends)."""

    sections: Mapping[str, str] | None
    gone: bool = False


class Shared:
    """One look at a sandbox shared by its viewers: a look younger than `fresh` seconds is
    reused, so ten open pages of one sandbox cost about what one does. (A look holds
    nothing that depends on the viewer; each viewer's access is checked apart.)"""

    def __init__(self, *, fresh: float = 0.25, keep: int = 1024) -> None:
        self.fresh = fresh
        self.keep = keep
        self._looks: dict[str, tuple[float, asyncio.Future[Seen]]] = {}

    async def look(self, key: str, make: Callable[[], Awaitable[Seen]]) -> Seen:
        now = time.monotonic()
        found = self._looks.get(key)
        if found is None or now - found[0] >= self.fresh:
            if len(self._looks) >= self.keep:
                self._looks = {k: v for k, v in self._looks.items() if now - v[0] < self.fresh}
            found = (now, asyncio.ensure_future(make()))
            self._looks[key] = found
        return await asyncio.shield(found[1])


def digest(html: str) -> str:
    return hashlib.sha256(html.encode()).hexdigest()[:_DIGEST]


def event_id(sections: Mapping[str, str]) -> str:
    return "-".join(digest(sections.get(name, "")) for name in SECTIONS)


def known(last_id: str | None) -> dict[str, str]:
    """The sections' digests an event id says the client has; none for anything else."""
    if not last_id or len(last_id) > 128 or not _ID.fullmatch(last_id):
        return {}
    return dict(zip(SECTIONS, last_id.split("-"), strict=True))


def changed(sections: Mapping[str, str], since: Mapping[str, str]) -> dict[str, str]:
    return {name: html for name, html in sections.items() if since.get(name) != digest(html)}


def update(sections: Mapping[str, str], since: Mapping[str, str]) -> dict[str, object]:
    """What the client lacks: the polling endpoint's answer, and an event's data."""
    return {"id": event_id(sections), "sections": changed(sections, since)}


def event(kind: str, data: Mapping[str, object]) -> bytes:
    """One event; `data` is one line of JSON (JSON escapes every newline)."""
    return f"id: {data['id']}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def stream(
    look: Callable[[], Awaitable[Seen]],
    since: Mapping[str, str],
    *,
    interval: float = INTERVAL,
    heartbeat: float = HEARTBEAT,
    lifetime: float = LIFETIME,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[bytes]:
    """The events of one client: a first one at once (so it knows the stream works), then one
    per change, `gone` when the sandbox is deleted (the end). `stop` set (the server is
    stopping) ends it at once, cleanly: a held stream would hold up the shutdown."""
    stop = stop or asyncio.Event()
    started = quiet_since = time.monotonic()
    first = True
    while time.monotonic() - started < lifetime and not stop.is_set():
        seen = await look()
        if seen.sections is None:
            return
        data = update(seen.sections, since)
        if seen.gone:
            yield event("gone", data)
            return
        if data["sections"] or first:
            yield event("sections", data)
            since, first, quiet_since = known(str(data["id"])), False, time.monotonic()
        elif time.monotonic() - quiet_since >= heartbeat:
            yield b": ping\n\n"
            quiet_since = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
