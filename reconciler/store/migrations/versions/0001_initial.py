"""The initial store schema: environments, workloads, resources, runs, steps and audit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

NAME = 253


def _when(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.JSON(), nullable=nullable)


def _environment_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["environment"], ["environments.name"], name=f"fk_{table}_environment_environments"
    )


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("last_commit", sa.String(64)),
        _when("last_reconciled_at"),
        _when("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_environments"),
    )
    op.create_table(
        "workloads",
        sa.Column("environment", sa.String(NAME), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("file", sa.Text(), nullable=False),
        sa.Column("spec_hash", sa.String(128), nullable=False),
        _json("spec"),
        _json("sources"),
        _json("source"),
        sa.Column("status", sa.String(32), nullable=False),
        _when("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("environment", "name", name="pk_workloads"),
        _environment_fk("workloads"),
    )
    op.create_table(
        "resources",
        sa.Column("environment", sa.String(NAME), nullable=False),
        sa.Column("uid", sa.String(1024), nullable=False),
        sa.Column("type", sa.String(NAME), nullable=False),
        sa.Column("class", sa.String(NAME), nullable=False),
        sa.Column("res_id", sa.String(1024), nullable=False),
        sa.Column("source_workload", sa.String(NAME)),
        sa.Column("provisioner", sa.String(NAME), nullable=False),
        sa.Column("params_hash", sa.String(128), nullable=False),
        _json("params"),
        _json("state"),
        _json("outputs"),
        _json("secret_refs"),
        sa.Column("status", sa.String(32), nullable=False),
        _when("created_at", nullable=False),
        _when("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("environment", "uid", name="pk_resources"),
        _environment_fk("resources"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("environment", sa.String(NAME), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        _json("plan", nullable=True),
        sa.Column("trace_id", sa.String(32)),
        _when("started_at", nullable=False),
        _when("finished_at"),
        sa.Column("error_code", sa.String(16)),
        sa.Column("message", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        _environment_fk("runs"),
    )
    op.create_index("ix_runs_environment_started_at", "runs", ["environment", "started_at"])
    op.create_table(
        "steps",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("step_id", sa.String(1024), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target", sa.String(1024), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        _json("depends_on"),
        _when("started_at"),
        _when("finished_at"),
        sa.Column("error_code", sa.String(16)),
        sa.Column("message", sa.Text()),
        _json("outputs"),
        sa.Column("log", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "step_id", name="pk_steps"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_steps_run_id_runs", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        _when("at", nullable=False),
        sa.Column("actor", sa.String(NAME), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("environment", sa.String(NAME)),
        sa.Column("subject", sa.String(1024), nullable=False),
        _json("detail"),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_environment_id", "audit", ["environment", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_environment_id", table_name="audit")
    op.drop_table("audit")
    op.drop_table("steps")
    op.drop_index("ix_runs_environment_started_at", table_name="runs")
    op.drop_table("runs")
    op.drop_table("resources")
    op.drop_table("workloads")
    op.drop_table("environments")
