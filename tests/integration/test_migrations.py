"""Schema migrations on real SQLite and PostgreSQL: an upgrade keeps every sandbox."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from sandboxd.errors import Conflict
from sandboxd.store.clock import utcnow
from sandboxd.store.engine import make_engine, migrate
from sandboxd.store.repository import IDEMPOTENCY_KEY_TTL, NewSandbox, Store
from sandboxd.store.tables import SandboxRow
from tests.support.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sandboxd.db'}"
    pg: PostgresServer = request.getfixturevalue("postgres")
    return pg.new_database()


def test_upgrading_from_the_first_schema_keeps_sandboxes(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine, revision="0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sandboxes (name, uid, routing_key, spec, labels, phase, forks, "
                "created_at, updated_at, expires_at, generation) VALUES ('old', 'u1', "
                '\'k1234567890\', \'{"name": "old", "ttl": "2h"}\', \'{"a": "b"}\', '
                "'Ready', '[]', '2026-01-01', '2026-01-01', '2030-01-01', 1)"
            )
        )
    migrate(engine)
    migrate(engine)  # running it again is a no-op
    store = Store(engine)
    old = store.get("old")
    assert old is not None and old.labels == {"a": "b"} and old.routing_key == "k1234567890"
    _, created = store.create(
        NewSandbox(
            spec={"name": "new"}, labels={}, ttl_seconds=60, request_hash="h", idempotency_key="i"
        )
    )
    assert created and {r.name for r in store.sandboxes()} == {"old", "new"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    engine.dispose()


def test_keys_from_before_0003_replay_only_the_sandbox_they_created(database_url: str) -> None:
    """A key older than its name's current sandbox (deleted and created again) gets no uid, so a
    replay is refused; a key of the sandbox still there keeps replaying it."""
    engine = make_engine(database_url)
    migrate(engine, revision="0002")
    key_time = utcnow() - timedelta(hours=1)
    sandboxes = (("kept", "u-kept", key_time), ("again", "u-new", key_time + timedelta(minutes=30)))
    with engine.begin() as conn:
        for name, uid, created in sandboxes:
            conn.execute(
                text(
                    "INSERT INTO sandboxes (name, uid, routing_key, spec, labels, phase, forks, "
                    "created_at, updated_at, expires_at, generation) VALUES (:n, :u, :k, :s, "
                    "'{}', 'Ready', '[]', :c, :c, '2099-01-01', 1)"
                ),
                {"n": name, "u": uid, "k": f"key{uid}0123456", "s": f'{{"name": "{name}"}}',
                 "c": created},
            )  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO idempotency_keys (key, request_hash, sandbox, created_at) "
                    "VALUES (:n, :n, :n, :t)"
                ),
                {"n": name, "t": key_time},
            )
    migrate(engine)
    store = Store(engine)

    def replay(name: str) -> tuple[SandboxRow, bool]:
        spec = {"name": name}
        new = NewSandbox(
            spec=spec, labels={}, ttl_seconds=60, request_hash=name, idempotency_key=name
        )
        return store.create(new)

    kept, created = replay("kept")
    assert (kept.uid, created) == ("u-kept", False)
    with pytest.raises(Conflict, match="this Idempotency-Key created is deleted"):
        replay("again")
    engine.dispose()


def test_the_sweep_forgets_idempotency_keys_after_a_day(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    spec = {"name": "swept"}
    new = NewSandbox(spec=spec, labels={}, ttl_seconds=60, request_hash="h", idempotency_key="k")
    store.create(new)

    store.expire_due(now=utcnow() + IDEMPOTENCY_KEY_TTL - timedelta(minutes=1))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM idempotency_keys")).scalar() == 1
    store.expire_due(now=utcnow() + IDEMPOTENCY_KEY_TTL)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM idempotency_keys")).scalar() == 0
    engine.dispose()
