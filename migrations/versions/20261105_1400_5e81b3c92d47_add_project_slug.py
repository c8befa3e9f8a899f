"""add project slug

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


def upgrade():
    # Nullable, no default: a catalog-only change under a brief exclusive lock. The
    # backfill is the next revision, so that lock is not held while every row is written.
    op.add_column("projects", sa.Column("slug", sa.String(length=200), nullable=True))


def downgrade():
    op.drop_column("projects", "slug")
