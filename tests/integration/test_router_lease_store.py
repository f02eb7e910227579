"""Folding router instances at the store, on real SQLite and PostgreSQL, where each report's
lease is chosen: 256 instances fill the cap under a long lease, then a short one folds them,
and the cap takes new instances again with every sum unchanged. Also the upgrade to 0006."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, bindparam, text

from sandboxd.core.phases import Phase
from sandboxd.core.records import Event
from sandboxd.core.spec import SandboxSpec
from sandboxd.store.counts import MAX_INSTANCES, Counts, Reported
from sandboxd.store.engine import alembic_config, make_engine, migrate
from sandboxd.store.repository import NewSandbox, Store
from sandboxd.store.retire import BATCH

LONG = timedelta(hours=1)
SHORT = timedelta(microseconds=1)  # every instance that reported before is past it
FAULTS = [{"id": "down", "service": "echo", "kind": "reset"}]


async def new_box(store: Store, name: str) -> str:
    spec = SandboxSpec.model_validate({"name": name, "faults": FAULTS})
    row, _ = await store.create(
        NewSandbox(spec=spec, labels={}, ttl_seconds=3600, request_hash=name)
    )
    return row.routing_key


def instances(engine: Engine) -> int:
    with engine.connect() as conn:
        query = "SELECT COUNT(DISTINCT instance) FROM fault_counts WHERE instance <> '~retired'"
        return int(conn.execute(text(query)).scalar_one())


async def test_folding_frees_the_cap_and_keeps_every_sum(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    key = await new_box(store, "box")

    def one(matched: int) -> list[Reported]:
        return [Reported("box", key, "down", Counts(matched, 1, 1, 0))]

    for n in range(MAX_INSTANCES):
        merged = await store.merge_counts(instance=f"i{n}", entries=one(n), lease=LONG)
        assert merged.accepted == 1, n
    full = await store.merge_counts(instance="late", entries=one(1000), lease=LONG)
    assert full.refused
    total = sum(range(MAX_INSTANCES))
    expected = Counts(total, MAX_INSTANCES, MAX_INSTANCES, 0)
    assert (await store.fault_counts([key]))[key]["down"] == expected

    late = await store.merge_counts(instance="late", entries=one(1000), lease=SHORT)

    assert late.accepted == 1 and not late.refused
    assert instances(engine) == MAX_INSTANCES - BATCH + 1
    for _ in range(MAX_INSTANCES // BATCH + 1):  # each report folds a batch more
        await store.merge_counts(instance="late", entries=[], lease=SHORT)
    assert instances(engine) == 0
    assert (await store.fault_counts([key]))[key]["down"] == expected + Counts(1000, 1, 1, 0)
    retired = await store.merge_counts(instance="i7", entries=one(7), lease=LONG)
    assert retired.retired is not None
    assert [(f.routing_key, f.fault, f.counts) for f in retired.retired] == [
        (key, "down", Counts(7, 1, 1, 0))
    ]
    engine.dispose()


async def test_counts_from_before_0006_get_a_lease_and_the_new_counters(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    migrate(engine, revision="0005")
    store = Store(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sandboxes (name, uid, routing_key, spec, labels, phase, forks, "
                "created_at, updated_at, expires_at, generation) VALUES ('old', 'u1', "
                "'k1234567890', :spec, '{}', 'Ready', '[]', '2026-01-01', '2026-01-01', "
                "'2099-01-01', 1)"
            ),
            {"spec": '{"name": "old", "faults": [{"id": "down", "service": "echo", '
                     '"kind": "reset"}]}'},
        )  # fmt: skip
        for instance, matched in (("a", 3), ("b", 4)):
            conn.execute(
                text(
                    "INSERT INTO fault_counts (instance, routing_key, fault, matched, injected,"
                    " updated_at) VALUES (:i, 'k1234567890', 'down', :m, 1, '2026-01-01')"
                ),
                {"i": instance, "m": matched},
            )

    migrate(engine)

    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert (await store.fault_counts(["k1234567890"]))["k1234567890"]["down"] == Counts(7, 2)
    # both last reported long ago: the next report folds them, and the sum stays
    await store.merge_counts(instance="new", entries=[], lease=timedelta(days=1))
    assert instances(engine) == 0
    assert (await store.fault_counts(["k1234567890"]))["k1234567890"]["down"] == Counts(7, 2)
    assert (await store.merge_counts(instance="a", entries=[], lease=LONG)).retired is not None
    engine.dispose()


async def test_deletes_and_folds_at_once_fail_nothing_and_keep_exact_sums(
    database_url: str,
) -> None:
    """Every report folds every instance before it (a lease of 1 µs) while half the sandboxes
    are deleted: folds, merges and deletes take the same locks in the same order, so none
    fails (a deadlock would be an error here), the kept sandboxes' sums are exact and nothing
    of the deleted ones is left, folded or not."""
    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    keys = {name: await new_box(store, name) for name in [f"box{n}" for n in range(8)]}
    doomed, kept = list(keys)[:4], list(keys)[4:]

    def on(names: list[str]) -> list[Reported]:
        return [Reported(n, keys[n], "down", Counts(1, 1)) for n in names]

    for n in range(8):
        await store.merge_counts(instance=f"seed{n}", entries=on(list(keys)), lease=LONG)

    async def delete(name: str) -> None:
        row = await store.request_delete(name, event=Event("Deleting", "test"))
        assert row is not None and row.uid is not None
        await store.set_status(
            name, uid=row.uid, phase=Phase.DELETED, reason=None, message=None, forks=[]
        )

    reports = [
        store.merge_counts(instance=f"s{n}", entries=on(kept), lease=SHORT) for n in range(24)
    ]
    await asyncio.gather(*reports, *(delete(name) for name in doomed))

    sums = await store.fault_counts(list(keys.values()))
    assert {n: sums.get(keys[n], {}).get("down") for n in keys} == {
        **{n: None for n in doomed}, **{n: Counts(8 + 24, 8 + 24) for n in kept}
    }  # fmt: skip
    with engine.connect() as conn:
        for table in ("fault_counts", "retired_counts"):
            left = f"SELECT COUNT(*) FROM {table} WHERE routing_key IN :keys"
            bound = text(left).bindparams(bindparam("keys", expanding=True))
            assert conn.execute(bound, {"keys": [keys[n] for n in doomed]}).scalar() == 0
    engine.dispose()
