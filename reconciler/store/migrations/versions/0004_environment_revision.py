"""A revision token per environment, replaced by every write to its workloads or resources.

Readers compare it to the token they last read to reuse the recorded state they decoded then,
in this process or another: a plan reads one value instead of every row.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("revision", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("revision")
