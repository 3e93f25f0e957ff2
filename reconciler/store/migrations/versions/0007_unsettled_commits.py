"""Unsettled commits: what runs started applying since an environment's last commit settled.

A plan reuses a recorded workload, unparsed, while none of its files changed since the last
commit. A run of a newer commit that never settled (killed, or superseded by the next push)
records workloads as they are at its commit, so for those records the change since the last
commit says nothing; ``unsettled`` names the commits whose records need a look of their own.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("unsettled", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("unsettled")
