"""validate task status check

Revision ID: b1d4e7a2c905
Revises: a9c36f7b0e18
Create Date: 2026-11-06 10:00:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b1d4e7a2c905'
down_revision = 'a9c36f7b0e18'
branch_labels = None
depends_on = None


def upgrade():
    # VALIDATE scans the table under SHARE UPDATE EXCLUSIVE: reads and writes go on.
    op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_status")


def downgrade():
    # A validated constraint cannot be marked NOT VALID again; the previous revision's
    # downgrade drops it. Nothing to undo here.
    pass
