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

# The first version's downgrade left the CHECK validated; this one restores NOT VALID.
# checksum-of-earlier-version: 281c6e8025c31236e2a782b75a189c46650f308d0a611977fe9c861b4fff1b06 downgrade now restores NOT VALID exactly; the upgrade is unchanged


def upgrade():
    # VALIDATE scans the table under SHARE UPDATE EXCLUSIVE: reads and writes go on.
    op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_status")


def downgrade():
    # PostgreSQL cannot mark a validated constraint NOT VALID again: drop it and add it back
    # NOT VALID, as the previous revision left it. Neither scans the table; both hold the
    # exclusive lock only for an instant (lock_timeout bounds the wait for it).
    op.drop_constraint(op.f("ck_tasks_status"), "tasks", type_="check")
    op.create_check_constraint(
        op.f("ck_tasks_status"), "tasks", "status IN ('todo', 'doing', 'done')",
        postgresql_not_valid=True,
    )
