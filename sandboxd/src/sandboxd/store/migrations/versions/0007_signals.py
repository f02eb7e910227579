"""Signals from the routers (issue 13): metric buckets and request records.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signal_buckets",
        sa.Column("routing_key", sa.String(64), primary_key=True),
        sa.Column("start", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("service", sa.String(63), primary_key=True),
        sa.Column("instance", sa.String(64), primary_key=True),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_signal_buckets_start", "signal_buckets", ["start"])
    op.create_table(
        "request_records",
        sa.Column("instance", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("routing_key", sa.String(64), nullable=False),
        sa.Column("service", sa.String(63), nullable=False),
        sa.Column("start", sa.Double, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error", sa.String(16), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_request_records_key_start", "request_records", ["routing_key", "start"])
    op.create_index("ix_request_records_key_trace", "request_records", ["routing_key", "trace_id"])


def downgrade() -> None:
    op.drop_table("request_records")
    op.drop_table("signal_buckets")
