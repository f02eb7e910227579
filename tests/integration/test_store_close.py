"""Closing the store waits for a call whose caller was cancelled (a shutdown does that), so
that disposing of the engine afterwards leaves no connection open: one left checked out by a
still-running thread stayed open (`test_lifespan.py` saw it once in CI)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from sandboxd.store.engine import make_engine
from sandboxd.store.repository import Store
from tests.integration.test_lifespan import _open_files_under
from tests.support import poll


async def test_a_cancelled_call_is_waited_for_before_the_engine_goes(tmp_path: Path) -> None:
    db = tmp_path / "data" / "sandboxd.db"
    db.parent.mkdir()
    engine = make_engine(f"sqlite:///{db}")
    store = Store(engine)
    await store.migrate()
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the write lock: the store's next write waits for it
    call = asyncio.create_task(store.put_token(name="late", token_hash="0" * 64))
    await asyncio.sleep(0)  # one turn: the task hands the call to the store's threads
    await asyncio.to_thread(
        poll.until,
        lambda: store.threads._work_queue.qsize(),  # taken by a thread: it waits for the lock
        lambda queued: queued == 0,
        timeout=5,
        what="the call to start in the store's thread",
    )
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call
    writer.execute("ROLLBACK")  # the thread goes on, as after a cancelled shutdown
    writer.close()
    await store.close()
    engine.dispose()
    assert _open_files_under(db.parent) == []
    assert "late" in await asyncio.to_thread(_token_names, db)  # the call did finish


def _token_names(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM tokens")}
