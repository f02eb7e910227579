"""The typed JSON column on real SQLite: models in, models out, and the JSON between them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import Column, Engine, Integer, MetaData, Table, create_engine, insert, select, text
from sqlalchemy.exc import StatementError

from sandboxd.core.phases import ForkState
from sandboxd.core.records import ForkRecord
from sandboxd.core.spec import SandboxSpec
from sandboxd.store.columns import TypedJSON

META = MetaData()
RECORDS = Table(
    "records",
    META,
    Column("id", Integer, primary_key=True),
    Column("spec", TypedJSON(SandboxSpec, exclude_none=True)),
    Column("forks", TypedJSON(list[ForkRecord])),
)
FORK = ForkRecord(service="echo", phase=ForkState.STARTING, ready=False, upstream=None, pid=7)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'records.db'}")
    META.create_all(engine)
    yield engine
    engine.dispose()


def _raw(engine: Engine) -> tuple[object, object]:
    with engine.connect() as conn:
        spec, forks = conn.execute(text("SELECT spec, forks FROM records")).one()
    return json.loads(spec), json.loads(forks)


def test_models_go_in_and_come_back_equal(engine: Engine) -> None:
    spec = SandboxSpec.model_validate({"name": "pr-1", "ttl": "2h", "forks": [{"service": "a"}]})
    with engine.begin() as conn:
        conn.execute(insert(RECORDS).values(id=1, spec=spec, forks=[FORK]))
    with engine.connect() as conn:
        row = conn.execute(select(RECORDS.c.spec, RECORDS.c.forks)).one()
    assert (row.spec, row.forks) == (spec, [FORK])
    assert isinstance(row.spec, SandboxSpec) and isinstance(row.forks[0], ForkRecord)


def test_the_json_is_camel_case_a_spec_without_nulls_a_fork_with_all_its_fields(
    engine: Engine,
) -> None:
    spec = SandboxSpec.model_validate({"name": "pr-1", "ttl": "90m"})
    with engine.begin() as conn:
        conn.execute(insert(RECORDS).values(id=1, spec=spec, forks=[FORK]))
    assert _raw(engine) == (
        {"name": "pr-1", "ttl": "90m", "labels": {}, "forks": [], "faults": []},
        [
            {
                "service": "echo",
                "phase": "Starting",
                "ready": False,
                "upstream": None,
                "pid": 7,
                "message": None,
                "startedAt": None,
            }
        ],
    )


@pytest.mark.filterwarnings("ignore")  # refused as in production, not by pytest's warning filter
def test_a_dict_is_refused_and_nothing_is_stored(engine: Engine) -> None:
    with pytest.raises(StatementError, match="Expected `SandboxSpec`"), engine.begin() as conn:
        conn.execute(insert(RECORDS).values(id=1, spec={"name": "pr-1"}, forks=[]))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM records")).scalar() == 0


def test_json_that_is_not_the_model_fails_where_it_is_read(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("""INSERT INTO records VALUES (1, '{"name": "NOT A NAME"}', '[]')"""))
    with pytest.raises(ValidationError, match="not a valid sandbox name"), engine.connect() as c:
        c.execute(select(RECORDS.c.spec)).one()


def test_a_fork_field_this_version_does_not_know_is_ignored(engine: Engine) -> None:
    """A row written by a newer version still loads after a rollback."""
    fork = '[{"service": "a", "phase": "Ready", "ready": true, "upstream": null, "next": 1}]'
    with engine.begin() as conn:
        conn.execute(text(f"""INSERT INTO records VALUES (1, '{{"name": "x"}}', '{fork}')"""))
    with engine.connect() as conn:
        (forks,) = conn.execute(select(RECORDS.c.forks)).one()
    assert forks == [ForkRecord(service="a", phase=ForkState.READY, ready=True, upstream=None)]
