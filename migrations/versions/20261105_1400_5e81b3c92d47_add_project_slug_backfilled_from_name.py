"""add project slug backfilled from name

Revision ID: 5e81b3c92d47
Revises: c47d0e5a9f26
Create Date: 2026-11-05 14:00:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5e81b3c92d47'
down_revision = 'c47d0e5a9f26'
branch_labels = None
depends_on = None


# The SQL twin of backend.models.project.slugify: lower case, runs of anything but
# a-z and 0-9 become one '-', no '-' at either end, and 'project' when nothing is left.
SLUG_SQL = (
    "coalesce(nullif(btrim(regexp_replace(lower(btrim(name)), '[^a-z0-9]+', '-', 'g'), '-'),"
    " ''), 'project')"
)


def upgrade():
    op.add_column("projects", sa.Column("slug", sa.String(length=200), nullable=True))
    # Plain SQL, so `flask db upgrade --sql` renders it too. Every row is touched once;
    # for a very large table, backfill in batches from a job before this revision.
    op.execute(f"UPDATE projects SET slug = {SLUG_SQL} WHERE slug IS NULL")


def downgrade():
    op.drop_column("projects", "slug")
