"""check task status values (NOT VALID): existing rows stay as they are, new rows must use a
known status from now on, and the downgrade lifts the rule."""

from sqlalchemy import Connection

from tests.migrations.data import rejects, rows

ROWS = [
    {"__tablename__": "users", "id": 2000, "email": "status-owner@example.com", "name": "Owner"},
    {"__tablename__": "projects", "id": 2000, "owner_id": 2000, "name": "Statuses",
     "slug": "statuses"},
    *({"__tablename__": "tasks", "id": 2001 + i, "project_id": 2000, "title": f"task {status}",
       "status": status} for i, status in enumerate(("todo", "doing", "done"))),
]
CONSTRAINT = "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_tasks_status'"
BAD_TASK = "INSERT INTO tasks (project_id, title, status) VALUES (2000, 'bad', 'lost')"


def upgraded(db: Connection) -> None:
    assert rows(db, CONSTRAINT) == [(False,)]  # NOT VALID: added without scanning the table
    assert rows(db, "SELECT status FROM tasks WHERE id BETWEEN 2000 AND 2999 ORDER BY id") == [
        ("todo",), ("doing",), ("done",)]
    rejects(db, BAD_TASK)


def downgraded(db: Connection) -> None:
    assert rows(db, CONSTRAINT) == []
    assert rows(db, BAD_TASK + " RETURNING status") == [("lost",)]
