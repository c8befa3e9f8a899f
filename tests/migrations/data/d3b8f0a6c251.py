"""add task updated_at: the column arrives empty and the change to the rows that exist is
only registered (a background migration), so the revision costs the same on any table size.
A task inserted afterwards gets its value from the column's default. The downgrade drops
the column and forgets the registration; the tasks stay."""

from sqlalchemy import Connection

from tests.migrations.data import rows

ROWS = [
    {"__tablename__": "users", "id": 8000, "email": "updated-at@example.com", "name": "Owner"},
    {"__tablename__": "projects", "id": 8001, "owner_id": 8000, "name": "Clock",
     "slug": "clock"},
    *({"__tablename__": "tasks", "id": 8002 + i, "project_id": 8001, "title": f"task {i}",
       "created_at": f"2026-0{i + 1}-15T10:00:00+00:00"} for i in range(3)),
]
REGISTERED = ("SELECT name, revision, table_name, state, rows_done FROM background_migrations "
              "WHERE name = 'tasks_updated_at'")


def upgraded(db: Connection) -> None:
    assert rows(db, REGISTERED) == [("tasks_updated_at", "d3b8f0a6c251", "tasks", "pending", 0)]
    assert rows(db, "SELECT count(*) FROM tasks WHERE id BETWEEN 8000 AND 8999 "
                    "AND updated_at IS NULL") == [(3,)]
    added = rows(db, "INSERT INTO tasks (project_id, title) VALUES (8001, 'new') "
                     "RETURNING updated_at IS NOT NULL")
    assert added == [(True,)]


def downgraded(db: Connection) -> None:
    assert rows(db, "SELECT count(*) FROM information_schema.columns "
                    "WHERE table_name = 'tasks' AND column_name = 'updated_at'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM background_migrations "
                    "WHERE name = 'tasks_updated_at'") == [(0,)]
    assert rows(db, "SELECT title FROM tasks WHERE id BETWEEN 8000 AND 8999 ORDER BY id") == \
        [("task 0",), ("task 1",), ("task 2",)]
