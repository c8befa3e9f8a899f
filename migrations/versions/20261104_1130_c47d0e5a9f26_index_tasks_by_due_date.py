"""index tasks by due date

Revision ID: c47d0e5a9f26
Revises: 8b2e4d6f1a93
Create Date: 2026-11-04 11:30:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c47d0e5a9f26'
down_revision = '8b2e4d6f1a93'
branch_labels = None
depends_on = None


def upgrade():
    # CONCURRENTLY cannot run inside a transaction, and it lets writes go on meanwhile.
    with op.get_context().autocommit_block():
        op.create_index(op.f("ix_tasks_due_date"), "tasks", ["due_date"],
                        postgresql_concurrently=True, if_not_exists=True)


def downgrade():
    with op.get_context().autocommit_block():
        op.drop_index(op.f("ix_tasks_due_date"), table_name="tasks",
                      postgresql_concurrently=True, if_exists=True)
