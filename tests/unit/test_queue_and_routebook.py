"""The work queue's guarantees and the route book's change notification."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

from sandboxd.core.catalog import Catalog
from sandboxd.core.phases import ForkState
from sandboxd.core.records import ForkRecord
from sandboxd.core.spec import SandboxSpec
from sandboxd.reconciler.queue import Backoff, WorkQueue
from sandboxd.routebook import RouteBook
from sandboxd.store.tables import SandboxRow


async def test_queue_deduplicates_and_reruns_a_name_kicked_while_active() -> None:
    queue = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert await queue.get() == "a"
    queue.add("a")  # kicked while a worker has it: must run again, but not concurrently
    assert await queue.get() == "b"
    assert queue._queue.empty()
    queue.done("a")
    assert await asyncio.wait_for(queue.get(), 1) == "a"


async def test_queue_add_after_keeps_the_earliest_retry() -> None:
    queue = WorkQueue()
    queue.add_after("a", 0.05)
    queue.add_after("a", 10)
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    queue.close()


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=60)
    assert [backoff.delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.delay(10_000) == 60  # no overflow, however long the streak


async def test_queue_retry_backs_off_per_name_and_forget_starts_over() -> None:
    queue = WorkQueue(Backoff(base=10, cap=25))
    assert [queue.retry("a") for _ in range(4)] == [10, 20, 25, 25]
    assert queue.retry("b") == 10  # each name has its own streak
    assert queue.retry("b", delay=3) == 3  # the error's own delay wins, and still counts
    assert queue.failures("b") == 2
    queue.forget("a")
    assert queue.failures("a") == 0
    assert queue.retry("a") == 10
    queue.close()


async def test_a_sweep_does_not_cut_a_booked_retry_short_but_a_kick_does() -> None:
    queue = WorkQueue(Backoff(base=30, cap=30))
    queue.retry("a")
    queue.add_unless_booked("a")
    queue.add_unless_booked("b")  # nothing booked for b: it runs now
    assert await asyncio.wait_for(queue.get(), 1) == "b"
    assert queue._queue.empty()
    queue.add("a")  # a change: converge now, whatever the backoff
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    queue.close()


def row(name: str, phase: str, forks: list[ForkRecord] | None = None) -> SandboxRow:
    now = datetime(2026, 1, 1)
    return SandboxRow(
        name=name, uid="u", routing_key=f"key-{name}", spec=SandboxSpec(name=name), labels={},
        phase=phase, forks=forks or [], created_at=now, updated_at=now, expires_at=now,
    )  # fmt: skip


def ready(service: str, upstream: str) -> ForkRecord:
    return ForkRecord(service=service, phase=ForkState.READY, ready=True, upstream=upstream)


async def test_route_book_releases_waiters_on_change_only() -> None:
    book = RouteBook(catalog=Catalog())
    etag = book.table.etag
    waiter = asyncio.create_task(book.wait_for_change(etag, timeout=5))
    await asyncio.sleep(0.01)
    book.update([row("a", "Ready", [ready("echo", "http://127.0.0.1:1")])])
    table = await asyncio.wait_for(waiter, 1)
    assert table.etag != etag and b"key-a" in table.body
    same = book.table.etag
    book.update([row("a", "Ready", [ready("echo", "http://127.0.0.1:1")])])
    assert book.table.etag == same
    assert (await book.wait_for_change(same, timeout=0.05)).etag == same
    book.update([row("a", "Terminating")])
    assert b"key-a" not in book.table.body
    book.reload([row("b", "Pending")], since=book.mark())
    assert b"key-b" in book.table.body


async def test_a_reload_keeps_what_was_written_while_it_read() -> None:
    """The sweep reads every row, then reloads: a create, a change and a delete that the API
    wrote meanwhile are newer than what it read, and stay; the rest is replaced."""
    book = RouteBook(catalog=Catalog())
    book.update([row("gone", "Ready"), row("changed", "Pending"), row("stale", "Ready")])
    since = book.mark()
    read = [row("gone", "Ready"), row("changed", "Pending")]  # "stale": another replica deleted it
    book.update([row("new", "Pending")])  # written while the sweep's read was in flight
    book.update([row("changed", "Ready", [ready("echo", "http://127.0.0.1:1")])])
    book.update([row("gone", "Terminating")])
    book.reload(read, since=since)
    body = book.table.body
    assert b"key-new" in body and b"http://127.0.0.1:1" in body
    assert b"key-gone" not in body and b"key-stale" not in body
    book.reload([row("changed", "Pending")], since=book.mark())  # the next sweep: the database
    assert b"key-new" not in book.table.body and b"http://127.0.0.1:1" not in book.table.body


async def test_a_table_tracks_each_change_of_a_sandboxs_faults() -> None:
    """Entries are encoded once and reused while unchanged: a change of faults (a PATCH), a
    reload that changes nothing, and one that changes a sandbox all give the right table."""

    def faulted(name: str, status: int) -> SandboxRow:
        fault = {"id": "f", "service": "echo", "kind": "http_error", "status": status}
        spec = SandboxSpec.model_validate({"name": name, "faults": [fault]})
        return row(name, "Ready").model_copy(update={"spec": spec})

    def statuses(book: RouteBook) -> dict[str, int]:
        routes = json.loads(book.table.body)["routes"]
        return {r["sandbox"]: r["faults"][0]["status"] for r in routes.values()}

    book = RouteBook(catalog=Catalog())
    book.update([faulted("a", 500), faulted("b", 501)])
    assert statuses(book) == {"a": 500, "b": 501}
    book.update([faulted("a", 502)])
    assert statuses(book) == {"a": 502, "b": 501}
    etag = book.table.etag
    book.reload([faulted("a", 502), faulted("b", 501)], since=book.mark())
    assert book.table.etag == etag
    book.reload([faulted("a", 502), faulted("b", 503)], since=book.mark())
    assert statuses(book) == {"a": 502, "b": 503}


async def test_the_book_gives_a_recent_table_as_changes_and_an_unknown_one_as_none() -> None:
    book = RouteBook(catalog=Catalog())
    book.update([row("a", "Ready", [ready("echo", "http://127.0.0.1:1")]), row("b", "Pending")])
    first = book.table
    book.update([row("a", "Terminating"), row("c", "Pending")])  # a goes, c comes, b stays
    second = book.table
    changes = json.loads(book.delta(second, first.etag) or b"null")
    assert changes["base"] == first.etag.strip('"') and changes["version"] == second.etag.strip('"')
    assert changes["removed"] == ["key-a"] and list(changes["routes"]) == ["key-c"]
    assert changes["routes"]["key-c"] == json.loads(second.body)["routes"]["key-c"]
    assert book.delta(second, '"unknown"') is None and book.delta(second, second.etag) is None
