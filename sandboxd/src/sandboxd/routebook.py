"""The route table as the API serves it: kept in memory, updated per sandbox, watched.

The API and the reconciler call `update` after every write that can move a route. The table is
rebuilt once per burst of updates (on the next turn of the event loop, or at once when someone
reads it), so a router's long poll is released right after the write, and a thousand creates do
not serialise a thousand tables. A periodic `reload` from the database repairs anything another
replica changed. A reload reads the database while writes go on: what `update` was told
after the read began (`mark`) is newer than the rows read, so the reload keeps it (a write
reverted by the sweep until the next one cost a PATCH 1-2 s to reach the routers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from sandboxd.core.catalog import Catalog
from sandboxd.core.phases import LIVE
from sandboxd.core.preview import epoch, preview_token
from sandboxd.core.routes import RoutedSandbox, RouteTable, build_route_table, route_entry
from sandboxd.store.tables import SandboxRow


def routed(row: SandboxRow, *, preview_key: bytes = b"") -> RoutedSandbox | None:
    """A live sandbox routes its key (to its forks, where their upstream is known), and its
    preview token when there is a `preview_key`; a terminating or deleted one does not route
    at all (so its preview token is revoked with it)."""
    if row.phase not in LIVE:
        return None
    forks = {f.service: f.upstream for f in row.forks if f.upstream}
    return RoutedSandbox(
        row.name,
        row.routing_key,
        forks,
        tuple(row.spec.faults),
        preview=preview_token(preview_key, uid=row.uid),
        expires=epoch(row.expires_at),
    )


RECENT = 16
"""Tables kept as delta bases: a router more than this many changes behind gets the whole."""


class RouteBook:
    def __init__(self, *, catalog: Catalog, preview_key: bytes = b"") -> None:
        """`preview_key`: what preview tokens are derived with (`core.preview.preview_key`;
        empty: the table carries none)."""
        self._catalog = catalog
        self._preview_key = preview_key
        self._entries: dict[str, RoutedSandbox] = {}
        self._table = build_route_table(catalog=catalog, sandboxes=())
        self._changed = asyncio.Event()
        self._dirty = False
        self._closed = False
        self._writes = 0
        self._touched: dict[str, int] = {}  # sandbox name → the write that last updated it
        self._recent: dict[str, RouteTable] = {}
        """The last `RECENT` tables by ETag: the bases a router's delta may start from."""
        self._encoded: dict[str, tuple[RoutedSandbox, bytes]] = {}
        """Sandbox name → its entry as last published, and that entry's bytes: a table is
        rebuilt on every change, and most of its entries are the very same objects."""

    @property
    def table(self) -> RouteTable:
        if self._dirty:
            self._publish()
        return self._table

    def update(self, rows: Iterable[SandboxRow]) -> None:
        changed = False
        self._writes += 1
        for row in rows:
            self._touched[row.name] = self._writes
            entry = routed(row, preview_key=self._preview_key)
            if self._entries.get(row.name) != entry:
                changed = True
                if entry is None:
                    self._entries.pop(row.name, None)
                else:
                    self._entries[row.name] = entry
        if changed:
            self._mark_dirty()

    def mark(self) -> int:
        """Call before reading the rows for `reload`."""
        return self._writes

    def reload(self, rows: Iterable[SandboxRow], *, since: int) -> None:
        """Replace the entries with `rows`, read after `mark()` returned `since`; sandboxes
        updated after that keep what `update` was told."""
        newer = {name for name, write in self._touched.items() if write > since}
        entries = {
            row.name: self._same(e)
            for row in rows
            if row.name not in newer
            and (e := routed(row, preview_key=self._preview_key)) is not None
        }
        for name in newer:
            if (entry := self._entries.get(name)) is not None:
                entries[name] = entry
        self._touched = {name: self._touched[name] for name in newer}
        if entries != self._entries:
            self._entries = entries
            self._mark_dirty()

    def _same(self, entry: RoutedSandbox) -> RoutedSandbox:
        """The current entry when equal to `entry`: a reload keeps what it did not change (and
        so what it did not change stays encoded)."""
        current = self._entries.get(entry.name)
        return current if current is not None and current == entry else entry

    def delta(self, table: RouteTable, base: str) -> bytes | None:
        """`table` as changes to the recent table whose ETag is `base`, if it is known."""
        old = self._recent.get(base)
        return table.delta_from(old) if old is not None and old is not table else None

    async def wait_for_change(self, etag: str, *, timeout: float) -> RouteTable:
        """The table once its ETag differs from `etag`, or the current one after `timeout`."""
        if self.table.etag != etag or self._closed:
            return self._table
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self._table

    def close(self) -> None:
        """The server is stopping: answer every long poll now, and every later one at once (a
        held request would hold up the shutdown)."""
        self._closed = True
        self._changed.set()

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            asyncio.get_running_loop().call_soon(self._publish)

    def _publish(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        known, self._encoded = self._encoded, {}
        table = build_route_table(
            catalog=self._catalog,
            sandboxes=self._entries.values(),
            encoded=lambda entry: self._encode(entry, known),
        )
        if table.etag != self._table.etag:
            self._recent[self._table.etag] = self._table
            while len(self._recent) > RECENT:
                del self._recent[next(iter(self._recent))]
            self._table = table
            event, self._changed = self._changed, asyncio.Event()
            event.set()

    def _encode(self, entry: RoutedSandbox, known: dict[str, tuple[RoutedSandbox, bytes]]) -> bytes:
        """The entry's bytes, from the last table when it is the very same entry (identity:
        equality would compare every fault of every sandbox)."""
        last = known.get(entry.name)
        encoded = last[1] if last is not None and last[0] is entry else route_entry(entry)
        self._encoded[entry.name] = (entry, encoded)
        return encoded
