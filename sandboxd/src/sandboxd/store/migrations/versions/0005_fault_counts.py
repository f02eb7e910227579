"""Fault counts reported by the routers, per router instance, sandbox (routing key) and fault.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fault_counts",
        sa.Column("instance", sa.String(64), primary_key=True),
        sa.Column("routing_key", sa.String(64), primary_key=True),
        sa.Column("fault", sa.String(63), primary_key=True),
        sa.Column("matched", sa.BigInteger, nullable=False),
        sa.Column("injected", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_fault_counts_routing_key", "fault_counts", ["routing_key"])


def downgrade() -> None:
    op.drop_index("ix_fault_counts_routing_key", table_name="fault_counts")
    op.drop_table("fault_counts")
