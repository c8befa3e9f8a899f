"""backfill last seen from posts

Revision ID: 5ace97b85307
Revises: b6d84e114554
Create Date: 2024-03-20 16:45:30.918273

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '5ace97b85307'
down_revision = 'b6d84e114554'
branch_labels = None
depends_on = None


def upgrade():
    # Users who posted before last_seen existed were last seen at their latest post.
    op.execute(
        "UPDATE users SET last_seen = latest.at"
        " FROM (SELECT user_id, max(timestamp) AS at FROM posts GROUP BY user_id) AS latest"
        " WHERE users.id = latest.user_id AND users.last_seen IS NULL"
    )


def downgrade():
    # The values stay: last_seen is only ever a hint, and the column goes with 7b573deb0543.
    pass
