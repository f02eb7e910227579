"""Faults stored before the fault rules existed are held to them, so every row still loads.

Before issue 12 a fault was stored with few checks (a `latency` without `latencyMs`, a
`status` of 200, a parameter its kind does not use) and never applied. The model now refuses
those, and a row it refuses cannot be read at all. Such faults are removed from the spec and
the sandbox's event log says which and why (a Warning); valid faults stay as stored (their ids
are generated on read, the same every time).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from pydantic import TypeAdapter, ValidationError

from sandboxd.core.errors import describe, one_line
from sandboxd.core.fault_spec import FaultSpec

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_sandboxes = sa.table(
    "sandboxes", sa.column("name", sa.String), sa.column("uid", sa.String),
    sa.column("spec", sa.JSON),
)  # fmt: skip
_events = sa.table(
    "events", sa.column("sandbox", sa.String), sa.column("uid", sa.String),
    sa.column("time", sa.DateTime), sa.column("type", sa.String),
    sa.column("reason", sa.String), sa.column("message", sa.String),
)  # fmt: skip
_FAULT = TypeAdapter(FaultSpec)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_sandboxes.c.name, _sandboxes.c.uid, _sandboxes.c.spec))
    for name, uid, spec in rows.all():
        faults = spec.get("faults") if isinstance(spec, dict) else None
        if not faults:
            continue
        kept, refused = _sort(faults)
        if not refused:
            continue
        bind.execute(
            sa.update(_sandboxes)
            .where(_sandboxes.c.name == name)
            .values(spec={**spec, "faults": kept})
        )
        message = "removed faults the fault rules refuse: " + "; ".join(refused)
        now = datetime.now(UTC).replace(tzinfo=None)
        event = {"sandbox": name, "uid": uid, "time": now, "type": "Warning",
                 "reason": "FaultsChanged", "message": message[:2048]}  # fmt: skip
        bind.execute(sa.insert(_events).values(**event))


def _sort(faults: list[Any]) -> tuple[list[Any], list[str]]:
    kept, refused = [], []
    for index, fault in enumerate(faults):
        try:
            _FAULT.validate_python(fault)
        except ValidationError as e:
            refused.append(f"faults[{index}] ({one_line(describe(e.errors()))})")
        else:
            kept.append(fault)
    return kept, refused


def downgrade() -> None:
    pass  # the removed faults were never applied; there is nothing to restore
