"""The `unread` and `unrewritten` counts; router instance leases; what was folded for retired
instances.

Instances that reported before this revision get a lease from their newest row, so one that is
gone is retired like any other.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name in ("unread", "unrewritten"):
        op.add_column(
            "fault_counts", sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
        )
    op.create_table(
        "router_instances",
        sa.Column("instance", sa.String(64), primary_key=True),
        sa.Column("seen_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_router_instances_seen_at", "router_instances", ["seen_at"])
    op.execute(
        "INSERT INTO router_instances (instance, seen_at) "
        "SELECT instance, MAX(updated_at) FROM fault_counts GROUP BY instance"
    )
    op.create_table(
        "retired_counts",
        sa.Column("instance", sa.String(64), primary_key=True),
        sa.Column("routing_key", sa.String(64), primary_key=True),
        sa.Column("fault", sa.String(63), primary_key=True),
        *(sa.Column(n, sa.BigInteger, nullable=False) for n in _COUNTS),
        sa.Column("retired_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_retired_counts_routing_key", "retired_counts", ["routing_key"])
    op.create_index("ix_retired_counts_retired_at", "retired_counts", ["retired_at"])


def downgrade() -> None:
    op.drop_table("retired_counts")
    op.drop_table("router_instances")
    with op.batch_alter_table("fault_counts") as batch:
        batch.drop_column("unrewritten")
        batch.drop_column("unread")


_COUNTS = ("matched", "injected", "unread", "unrewritten")
