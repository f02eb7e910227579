"""Schema migrations on real SQLite and PostgreSQL: an upgrade keeps every sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from sandboxd.store.engine import make_engine, migrate
from sandboxd.store.repository import NewSandbox, Store
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
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"
    engine.dispose()
