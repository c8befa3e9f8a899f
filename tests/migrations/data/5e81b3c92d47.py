"""add project slug: a nullable column, so projects written before it keep their names and
get no slug yet (the next revision backfills); the downgrade drops the column and keeps the
rows."""

from sqlalchemy import Connection

from tests.migrations.data import rows

NAMES = ["Before Slugs", "  Spaced   Out  "]

ROWS = [
    {"__tablename__": "users", "id": 6000, "email": "before-slugs@example.com", "name": "Owner"},
    *({"__tablename__": "projects", "id": 6001 + i, "owner_id": 6000, "name": name}
      for i, name in enumerate(NAMES)),
]
COLUMNS = ("SELECT column_name FROM information_schema.columns "
           "WHERE table_name = 'projects' AND column_name = 'slug'")


def upgraded(db: Connection) -> None:
    assert rows(db, "SELECT name, slug FROM projects WHERE id BETWEEN 6000 AND 6999 "
                    "ORDER BY id") == [(name, None) for name in NAMES]


def downgraded(db: Connection) -> None:
    assert rows(db, COLUMNS) == []
    assert rows(db, "SELECT name FROM projects WHERE id BETWEEN 6000 AND 6999 "
                    "ORDER BY id") == [(name,) for name in NAMES]
