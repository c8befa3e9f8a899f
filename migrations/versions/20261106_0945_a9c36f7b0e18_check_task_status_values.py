"""check task status values

Revision ID: a9c36f7b0e18
Revises: 6c2d9e4f8a17
Create Date: 2026-11-06 09:45:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a9c36f7b0e18'
down_revision = '6c2d9e4f8a17'
branch_labels = None
depends_on = None


def upgrade():
    # NOT VALID: a brief exclusive lock, no scan; new and updated rows are checked from
    # now on. The existing rows are checked by the next revision, in its own transaction:
    # in this one the exclusive lock would last through the whole scan.
    op.create_check_constraint(
        op.f("ck_tasks_status"), "tasks", "status IN ('todo', 'doing', 'done')",
        postgresql_not_valid=True,
    )


def downgrade():
    op.drop_constraint(op.f("ck_tasks_status"), "tasks", type_="check")
