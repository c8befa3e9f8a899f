"""backfill project slugs from names

Revision ID: 6c2d9e4f8a17
Revises: 5e81b3c92d47
Create Date: 2026-11-05 14:30:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '6c2d9e4f8a17'
down_revision = '5e81b3c92d47'
branch_labels = None
depends_on = None


# The SQL twin of backend.models.project.slugify: lower case, runs of anything but
# a-z and 0-9 become one '-', no '-' at either end, and 'project' when nothing is left.
SLUG_SQL = (
    "coalesce(nullif(btrim(regexp_replace(lower(btrim(name)), '[^a-z0-9]+', '-', 'g'), '-'),"
    " ''), 'project')"
)


def upgrade():
    # A data migration on its own: UPDATE takes row locks only, so reads go on and only
    # writes to the same rows wait. Plain SQL, so `flask db upgrade --sql` renders it too.
    # For a table of many millions of rows, backfill in batches from a job instead.
    op.execute(f"UPDATE projects SET slug = {SLUG_SQL} WHERE slug IS NULL")


def downgrade():
    # Nothing to undo: the slugs stay until the previous revision's downgrade drops the
    # column, and code of that era ignores them.
    pass
