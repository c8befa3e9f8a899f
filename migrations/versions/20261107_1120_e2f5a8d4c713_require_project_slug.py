"""require project slug

Revision ID: e2f5a8d4c713
Revises: a9c36f7b0e18
Create Date: 2026-11-07 11:20:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e2f5a8d4c713'
down_revision = 'a9c36f7b0e18'
branch_labels = None
depends_on = None


def upgrade():
    # SET NOT NULL scans the table under an exclusive lock, unless a validated
    # CHECK (slug IS NOT NULL) already proves it: then PostgreSQL skips the scan.
    # Rows written by code that predates the slug column.
    op.execute(
        "UPDATE projects SET slug = coalesce(nullif(btrim(regexp_replace("
        "lower(btrim(name)), '[^a-z0-9]+', '-', 'g'), '-'), ''), 'project') WHERE slug IS NULL"
    )
    op.create_check_constraint(
        op.f("ck_projects_slug_not_null"), "projects", "slug IS NOT NULL", postgresql_not_valid=True
    )
    op.execute("ALTER TABLE projects VALIDATE CONSTRAINT ck_projects_slug_not_null")
    op.alter_column("projects", "slug", existing_type=sa.String(length=200), nullable=False)
    op.drop_constraint(op.f("ck_projects_slug_not_null"), "projects", type_="check")


def downgrade():
    op.alter_column("projects", "slug", existing_type=sa.String(length=200), nullable=True)
