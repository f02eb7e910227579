"""Schema migrations on real SQLite and PostgreSQL: an upgrade keeps every sandbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from sandboxd.core.clock import utcnow
from sandboxd.core.phases import ForkState, Phase
from sandboxd.core.spec import SandboxSpec
from sandboxd.errors import Conflict
from sandboxd.store.engine import make_engine, migrate
from sandboxd.store.repository import IDEMPOTENCY_KEY_TTL, NewSandbox, Store
from sandboxd.store.signals import BucketIn, RecordIn
from sandboxd.store.tables import SandboxRow


async def test_upgrading_from_the_first_schema_keeps_sandboxes(database_url: str) -> None:
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
    old = await store.get("old")
    assert old is not None and old.labels == {"a": "b"} and old.routing_key == "k1234567890"
    _, created = await store.create(
        NewSandbox(
            spec=SandboxSpec(name="new"),
            labels={},
            ttl_seconds=60,
            request_hash="h",
            idempotency_key="i",
        )
    )
    assert created and {r.name for r in await store.sandboxes()} == {"old", "new"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0008"
    engine.dispose()


async def test_keys_from_before_0003_replay_only_the_sandbox_they_created(
    database_url: str,
) -> None:
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

    async def replay(name: str) -> tuple[SandboxRow, bool]:
        spec = SandboxSpec(name=name)
        new = NewSandbox(
            spec=spec, labels={}, ttl_seconds=60, request_hash=name, idempotency_key=name
        )
        return await store.create(new)

    kept, created = await replay("kept")
    assert (kept.uid, created) == ("u-kept", False)
    with pytest.raises(Conflict, match="this Idempotency-Key created is deleted"):
        await replay("again")
    engine.dispose()


async def test_the_sweep_forgets_idempotency_keys_after_a_day(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    spec = SandboxSpec(name="swept")
    new = NewSandbox(spec=spec, labels={}, ttl_seconds=60, request_hash="h", idempotency_key="k")
    await store.create(new)

    await store.expire_due(now=utcnow() + IDEMPOTENCY_KEY_TTL - timedelta(minutes=1))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM idempotency_keys")).scalar() == 1
    await store.expire_due(now=utcnow() + IDEMPOTENCY_KEY_TTL)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM idempotency_keys")).scalar() == 0
    engine.dispose()


# A row as sandboxd wrote it before the record was typed: the spec in its canonical form (no
# nulls), each fork as `decide.fork_record` built the dict (every key, nulls included).
OLD_SPEC = (
    '{"name": "pr-9", "ttl": "2h", "labels": {"github.pr": "9"}, '
    '"agent": {"promptVersion": "p3", "tools": {"search": "1.2"}}, '
    '"forks": [{"service": "echo", "command": ["python3", "-m", "http.server"], '
    '"env": {"MODE": "x"}}], '
    '"faults": [{"service": "echo", "kind": "latency", "latencyMs": 200, "probability": 0.5}]}'
)
OLD_FORKS = (
    '[{"service": "echo", "phase": "Ready", "ready": true, "upstream": "http://127.0.0.1:4100", '
    '"pid": 4242, "message": null, "startedAt": "2026-01-01T10:00:00.123Z"}, '
    '{"service": "mcp", "phase": "Starting", "ready": false, "upstream": null, '
    '"pid": null, "message": "waiting", "startedAt": null}]'
)


async def test_a_row_the_untyped_code_wrote_loads_into_the_typed_record(database_url: str) -> None:
    """The JSON shape did not change: no migration, and a rewrite stores the same JSON."""
    engine = make_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sandboxes (name, uid, routing_key, spec, labels, phase, forks, "
                "created_at, updated_at, expires_at, generation) VALUES ('pr-9', 'u9', "
                "'k9876543210', :spec, '{}', 'Ready', :forks, '2026-01-01', '2026-01-01', "
                "'2099-01-01', 1)"
            ),
            {"spec": OLD_SPEC, "forks": OLD_FORKS},
        )
    store = Store(engine)
    row = await store.get("pr-9")
    assert row is not None
    assert row.spec.ttl_seconds == 7200 and row.spec.labels == {"github.pr": "9"}
    assert row.spec.agent is not None and row.spec.agent.tools == {"search": "1.2"}
    assert row.spec.forks[0].env == {"MODE": "x"}
    assert (row.spec.faults[0].kind, row.spec.faults[0].latency_ms) == ("latency", 200)
    echo, mcp = row.forks
    assert (echo.phase, echo.ready, echo.pid, echo.upstream) == (
        ForkState.READY,
        True,
        4242,
        "http://127.0.0.1:4100",
    )
    assert echo.started_at == datetime(2026, 1, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert (mcp.phase, mcp.upstream, mcp.started_at) == (ForkState.STARTING, None, None)

    await store.set_status(
        "pr-9", uid="u9", phase=Phase.READY, reason="r", message="m", forks=[echo.stopped(), mcp]
    )
    with engine.connect() as conn:
        spec, forks = conn.execute(text("SELECT spec, forks FROM sandboxes")).one()
    spec, forks = _json(spec), _json(forks)
    assert spec == json.loads(OLD_SPEC)
    assert forks == [{**json.loads(OLD_FORKS)[0], "phase": "Stopped", "ready": False},
                     json.loads(OLD_FORKS)[1]]  # fmt: skip
    engine.dispose()


def _json(value: object) -> object:
    """A JSON column as the driver gives it: text on SQLite, already decoded on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


async def test_upgrading_from_0006_adds_the_signal_tables(database_url: str) -> None:
    """A database of issue 12 takes buckets and request records after the upgrade, for the
    sandboxes it held."""
    engine = make_engine(database_url)
    migrate(engine, revision="0006")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sandboxes (name, uid, routing_key, spec, labels, phase, forks, "
                "created_at, updated_at, expires_at, generation) VALUES ('old', 'u1', "
                "'k1234567890', '{\"name\": \"old\"}', '{}', 'Ready', '[]', '2026-01-01', "
                "'2026-01-01', '2099-01-01', 1)"
            )
        )
    migrate(engine)
    store = Store(engine)
    bucket = BucketIn("old", "k1234567890", "svc", 1_765_000_000, 10, 3, '{"requests": 3}')
    record = RecordIn("old", "k1234567890", 1, "svc", 1_765_000_001.5, 200, None, None, "{}")

    stored = await store.store_signals(instance="i", buckets=[bucket], records=[record])

    assert (stored.accepted, stored.ignored) == (2, 0)
    with engine.connect() as conn:
        for table in ("signal_buckets", "request_records"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1
    await store.close()
    engine.dispose()
