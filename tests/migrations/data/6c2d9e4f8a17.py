"""backfill project slugs from names: every existing project gets the slug the model's
``slugify`` would give its name; the downgrade keeps the rows and their names."""

from sqlalchemy import Connection

from backend.models.project import slugify
from tests.migrations.data import rows

NAMES = ["My First Project!", "  Hello   World  ", "???", "Ünïcode Näme", "a--b__c",
         "CamelCase2026", "  trailing-  ", "!!!"]

ROWS = [
    {"__tablename__": "users", "id": 1000, "email": "slug-owner@example.com", "name": "Owner"},
    *({"__tablename__": "projects", "id": 1001 + i, "owner_id": 1000, "name": name}
      for i, name in enumerate(NAMES)),
]


def upgraded(db: Connection) -> None:
    slugs = rows(db, "SELECT name, slug FROM projects WHERE id BETWEEN 1000 AND 1999 ORDER BY id")
    assert slugs == [(name, slugify(name)) for name in NAMES]
    assert slugs[:3] == [("My First Project!", "my-first-project"),
                         ("  Hello   World  ", "hello-world"), ("???", "project")]
    assert rows(db, "SELECT count(*) FROM projects WHERE slug IS NULL") == [(0,)]


def downgraded(db: Connection) -> None:
    names = rows(db, "SELECT name FROM projects WHERE id BETWEEN 1000 AND 1999 ORDER BY id")
    assert names == [(name,) for name in NAMES]
