"""add user api token

Revision ID: 4a1f6c8e2d35
Revises: d3b8f0a6c251
Create Date: 2026-12-02 09:00:00.000000+00:00

Users get an API token, of which only a SHA-256 digest is stored. Users created before
this revision have none (the column is nullable) and cannot sign in until an operator
issues one (`flask users token EMAIL`): a token is only ever shown once, so there is
nothing to backfill.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '4a1f6c8e2d35'
down_revision = 'd3b8f0a6c251'
branch_labels = None
depends_on = None


def upgrade():
    # A nullable column without a default is a catalog change only, whatever the table's size.
    op.add_column("users", sa.Column("token_hash", sa.String(length=64), nullable=True))
    # Every request looks its user up by this digest; the index also keeps two users from
    # sharing one. CONCURRENTLY cannot run inside a transaction, and lets writes go on.
    with op.get_context().autocommit_block():
        op.create_index(op.f("ix_users_token_hash"), "users", ["token_hash"], unique=True,
                        postgresql_concurrently=True, if_not_exists=True)


def downgrade():
    with op.get_context().autocommit_block():
        op.drop_index(op.f("ix_users_token_hash"), table_name="users",
                      postgresql_concurrently=True, if_exists=True)
    op.drop_column("users", "token_hash")
