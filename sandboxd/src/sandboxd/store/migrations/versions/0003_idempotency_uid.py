"""`Idempotency-Key` remembers which sandbox it created (its uid), not only the name.

A replay after that sandbox was deleted (and perhaps the name used again) must not return
another sandbox. Existing keys are matched to the sandbox now holding the name only when that
sandbox is no younger than the key; otherwise the uid stays NULL, which reads as "gone".

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("uid", sa.String(32), nullable=True))
        batch.create_index("ix_idempotency_keys_created_at", ["created_at"])
    op.execute(
        "UPDATE idempotency_keys SET uid = (SELECT s.uid FROM sandboxes s "
        "WHERE s.name = idempotency_keys.sandbox AND s.created_at <= idempotency_keys.created_at)"
    )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_index("ix_idempotency_keys_created_at")
        batch.drop_column("uid")
