"""add task updated_at

Revision ID: d3b8f0a6c251
Revises: f7a2c1e9b384
Create Date: 2026-12-01 09:00:00.000000+00:00

The expand step of expand -> background backfill -> contract: the column arrives nullable
and empty, the rows that exist get their value from a background migration, and the
post-deploy revision 7e4a9c1d2b60 makes it NOT NULL once that is done.
"""
from alembic import op
import sqlalchemy as sa

from backend.migrate.background import register_backfill, unregister_backfill


# revision identifiers, used by Alembic.
revision = 'd3b8f0a6c251'
down_revision = 'f7a2c1e9b384'
branch_labels = None
depends_on = None


def upgrade():
    # Without a default the column costs a catalog change, whatever the table's size. The
    # default comes in a second statement so it applies to new rows only: given in
    # ADD COLUMN, now() (stable, so stored once as a "fast default") would stamp every
    # existing row with this moment instead of leaving them for the backfill. From here
    # on a row inserted by either release, this one or the one still serving, has a value.
    op.add_column("tasks", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.alter_column("tasks", "updated_at", server_default=sa.func.now())
    # The rows that exist: in batches, outside the start path (flask migrations backfill run).
    register_backfill(
        "tasks_updated_at", "tasks",
        "UPDATE tasks SET updated_at = created_at "
        "WHERE id > :start AND id <= :stop AND updated_at IS NULL")


def downgrade():
    unregister_backfill("tasks_updated_at")
    op.drop_column("tasks", "updated_at")
