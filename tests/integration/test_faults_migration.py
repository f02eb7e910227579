"""Faults stored before the fault rules: the upgrade keeps every row readable, on real SQLite and
PostgreSQL, removing only the faults the rules refuse and saying so in the event log."""

from __future__ import annotations

import json

from sqlalchemy import text

from sandboxd.store.engine import make_engine, migrate
from sandboxd.store.repository import Store

GOOD = {"service": "echo", "kind": "latency", "latencyMs": 200, "probability": 0.5}
OLD_SPEC = {
    "name": "pr-7",
    "ttl": "2h",
    "faults": [
        {"service": "echo", "kind": "latency"},  # no latencyMs: refused now
        GOOD,
        {"service": "echo", "kind": "http_error", "status": 200},  # not an error: refused now
    ],
}


async def test_the_upgrade_removes_faults_the_rules_refuse_and_records_why(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    migrate(engine, revision="0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sandboxes (name, uid, routing_key, spec, labels, phase, forks, "
                "created_at, updated_at, expires_at, generation) VALUES ('pr-7', 'u7', "
                "'k7777777777', :spec, '{}', 'Ready', '[]', '2026-01-01', '2026-01-01', "
                "'2099-01-01', 1)"
            ),
            {"spec": json.dumps(OLD_SPEC)},
        )

    migrate(engine)

    store = Store(engine)
    row = await store.get("pr-7")
    assert row is not None
    assert [f.as_json() | {"id": "-"} for f in row.spec.faults] == [GOOD | {"id": "-"}]
    events = await store.events("pr-7", uid="u7")
    assert [(e.type, e.reason) for e in events] == [("Warning", "FaultsChanged")]
    assert "faults[0] (latencyMs: kind latency needs latencyMs)" in events[0].message
    assert "faults[2] (status:" in events[0].message
    engine.dispose()
