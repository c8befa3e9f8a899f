"""add due date to tasks

Revision ID: 8b2e4d6f1a93
Revises: 3f9a1c2b7d10
Create Date: 2026-11-03 10:15:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8b2e4d6f1a93'
down_revision = '3f9a1c2b7d10'
branch_labels = None
depends_on = None


def upgrade():
    # A nullable column with no default: a catalog-only change, no table rewrite.
    op.add_column("tasks", sa.Column("due_date", sa.Date(), nullable=True))


def downgrade():
    op.drop_column("tasks", "due_date")
