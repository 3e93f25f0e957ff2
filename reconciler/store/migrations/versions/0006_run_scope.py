"""Run scope: the workloads a run reconciles, when it is not the whole environment.

The daemon's work queue is keyed by (environment, workload), so one run may apply a few
workloads of a commit while another replica applies others; ``scope`` says which (NULL: all).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("scope", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("scope")
