"""require project slug: the validated check lets SET NOT NULL skip its scan and is dropped;
every row keeps its slug. The downgrade makes the column nullable again and puts the NOT VALID
check back, so a project without a slug is still refused."""

from sqlalchemy import Connection

from tests.migrations.data import rejects, rows

ROWS = [
    {"__tablename__": "users", "id": 5000, "email": "required@example.com", "name": "Owner"},
    {"__tablename__": "projects", "id": 5001, "owner_id": 5000, "name": "Has A Slug",
     "slug": "has-a-slug"},
]
NULLABLE = ("SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'projects' AND column_name = 'slug'")
CONSTRAINT = "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_projects_slug_not_null'"
NO_SLUG = "INSERT INTO projects (owner_id, name) VALUES (5000, 'no slug')"


def upgraded(db: Connection) -> None:
    assert rows(db, NULLABLE) == [("NO",)]
    assert rows(db, CONSTRAINT) == []
    assert rows(db, "SELECT slug FROM projects WHERE id = 5001") == [("has-a-slug",)]
    rejects(db, NO_SLUG)


def downgraded(db: Connection) -> None:
    assert rows(db, NULLABLE) == [("YES",)]
    assert rows(db, CONSTRAINT) == [(False,)]
    assert rows(db, "SELECT slug FROM projects WHERE id = 5001") == [("has-a-slug",)]
    rejects(db, NO_SLUG)
