"""check project slug is set: projects written with no slug (by code older than the slug
column) get one, slugs already set are kept, and new rows need one (NOT VALID check). The
downgrade drops the check and keeps the filled slugs."""

from sqlalchemy import Connection

from backend.models.project import slugify
from tests.migrations.data import rejects, rows

ROWS = [
    {"__tablename__": "users", "id": 4000, "email": "old-code@example.com", "name": "Owner"},
    {"__tablename__": "projects", "id": 4001, "owner_id": 4000,
     "name": "Written Before Deploy", "slug": None},
    {"__tablename__": "projects", "id": 4002, "owner_id": 4000, "name": " Ünïcode!! ",
     "slug": None},
    {"__tablename__": "projects", "id": 4003, "owner_id": 4000, "name": "Chosen Slug",
     "slug": "kept-as-is"},
]
MINE = "SELECT id, slug FROM projects WHERE id BETWEEN 4000 AND 4999 ORDER BY id"
CONSTRAINT = "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_projects_slug_not_null'"
NO_SLUG = "INSERT INTO projects (owner_id, name) VALUES (4000, 'no slug')"
FILLED = [(4001, "written-before-deploy"), (4002, slugify(" Ünïcode!! ")), (4003, "kept-as-is")]


def upgraded(db: Connection) -> None:
    assert rows(db, MINE) == FILLED
    assert rows(db, "SELECT count(*) FROM projects WHERE slug IS NULL") == [(0,)]
    assert rows(db, CONSTRAINT) == [(False,)]
    rejects(db, NO_SLUG)


def downgraded(db: Connection) -> None:
    assert rows(db, MINE) == FILLED
    assert rows(db, CONSTRAINT) == []
    assert rows(db, NO_SLUG + " RETURNING slug") == [(None,)]
