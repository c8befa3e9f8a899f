"""check project slug is set

Revision ID: e2f5a8d4c713
Revises: b1d4e7a2c905
Create Date: 2026-11-07 11:20:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e2f5a8d4c713'
down_revision = 'b1d4e7a2c905'
branch_labels = None
depends_on = None


def upgrade():
    # Step one of making projects.slug NOT NULL without a long exclusive lock: fill the
    # rows written by code that predates the slug column, then add CHECK (slug IS NOT
    # NULL) NOT VALID. The next revision validates it and sets NOT NULL.
    op.execute(
        "UPDATE projects SET slug = coalesce(nullif(btrim(regexp_replace("
        "lower(btrim(name)), '[^a-z0-9]+', '-', 'g'), '-'), ''), 'project') WHERE slug IS NULL"
    )
    op.create_check_constraint(
        op.f("ck_projects_slug_not_null"), "projects", "slug IS NOT NULL",
        postgresql_not_valid=True,
    )


def downgrade():
    op.drop_constraint(op.f("ck_projects_slug_not_null"), "projects", type_="check")
