"""require task updated_at (post-deploy): the backfill registered by d3b8f0a6c251 is done
first (deployed, `flask migrations post-deploy` waits for the runner; in a walk from scratch
the revision finishes it), every task holds its creation time or a later one, and the
column is NOT NULL with no check left behind. The downgrade makes it nullable again and
keeps every value."""

from sqlalchemy import Connection

from tests.migrations.data import rejects, rows

ROWS = [
    {"__tablename__": "users", "id": 9000, "email": "required-at@example.com", "name": "Owner"},
    {"__tablename__": "projects", "id": 9001, "owner_id": 9000, "name": "Later",
     "slug": "later"},
    # Inserted by the previous release, which does not know the column: the default fills it.
    {"__tablename__": "tasks", "id": 9002, "project_id": 9001, "title": "by the old code",
     "created_at": "2026-11-30T08:00:00+00:00"},
    # Left NULL, as a row from before the expand is until the backfill reaches it.
    {"__tablename__": "tasks", "id": 9003, "project_id": 9001, "title": "not reached yet",
     "created_at": "2026-11-29T08:00:00+00:00", "updated_at": None},
]
NULLABLE = ("SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'tasks' AND column_name = 'updated_at'")


def upgraded(db: Connection) -> None:
    assert rows(db, NULLABLE) == [("NO",)]
    assert rows(db, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'tasks'::regclass "
                    "AND contype = 'c' AND conname LIKE '%updated_at%'") == [(0,)]
    assert rows(db, "SELECT updated_at = created_at FROM tasks WHERE id = 9003") == [(True,)]
    assert rows(db, "SELECT count(*) FROM tasks WHERE updated_at < created_at") == [(0,)]
    assert rows(db, "SELECT state FROM background_migrations "
                    "WHERE name = 'tasks_updated_at'") == [("done",)]
    rejects(db, "INSERT INTO tasks (project_id, title, updated_at) VALUES (9001, 'x', NULL)")


def downgraded(db: Connection) -> None:
    assert rows(db, NULLABLE) == [("YES",)]
    assert rows(db, "SELECT updated_at = created_at FROM tasks WHERE id = 9003") == [(True,)]
