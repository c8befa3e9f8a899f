"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

"""
# How to change a busy table without stopping it (docs/safe-migrations.md):
# - Each revision runs in its own transaction; keep it to one logical change.
# - Big tables:  backend/migrate/large_tables.py: create_index_concurrently, set_not_null,
#                add_foreign_key, add_enum_value do the steps below in one call each.
# - Index:       with op.get_context().autocommit_block():
#                    op.create_index(..., postgresql_concurrently=True, if_not_exists=True)
# - Constraint:  op.create_check_constraint(...) / op.create_foreign_key(...) with
#                postgresql_not_valid=True; then, in the NEXT revision (its own transaction),
#                op.execute("ALTER TABLE t VALIDATE CONSTRAINT c"). In one transaction the
#                exclusive lock of ADD CONSTRAINT would last through the whole scan.
# - NOT NULL:    add the column nullable, backfill, add CHECK (c IS NOT NULL) NOT VALID;
#                next revision: VALIDATE it, SET NOT NULL (no scan), drop the CHECK.
# - Rename or change a type: expand/contract. Add the new column, write both, backfill,
#                switch reads, drop the old column in a later release.
# - Data:        plain SQL through op.execute(), so `flask db upgrade --sql` can render it.
#                Never read rows into Python here: offline rendering has no database.
# - Downgrade:   undo exactly what upgrade did, in reverse order.
# - Row loss:    a revision that deletes rows on purpose says so for scripts/rehearse.sh:
#                # rehearse: expect-row-loss <table> <reason>
# - Timeouts:    op.execute("SET LOCAL lock_timeout = '10s'") changes them for this revision.
# - Lint:        scripts/lint_migrations.sh <rev>; silence one rule for this file with a
#                comment: # squawk-ignore: <rule> <reason>
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade():
    ${upgrades if upgrades else "pass"}


def downgrade():
    ${downgrades if downgrades else "pass"}
