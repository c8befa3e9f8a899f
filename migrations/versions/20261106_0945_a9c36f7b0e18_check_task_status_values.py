"""check task status values

Revision ID: a9c36f7b0e18
Revises: 5e81b3c92d47
Create Date: 2026-11-06 09:45:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a9c36f7b0e18'
down_revision = '5e81b3c92d47'
branch_labels = None
depends_on = None


def upgrade():
    # NOT VALID takes a brief lock and checks only new rows; VALIDATE then scans the
    # table under a lock that lets reads and writes go on.
    op.create_check_constraint(
        op.f("ck_tasks_status"), "tasks", "status IN ('todo', 'doing', 'done')", postgresql_not_valid=True
    )
    op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_status")


def downgrade():
    op.drop_constraint(op.f("ck_tasks_status"), "tasks", type_="check")
