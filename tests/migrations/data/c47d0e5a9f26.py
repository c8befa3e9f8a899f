"""index tasks by due date: the index is built (CONCURRENTLY, outside the revision's
transaction) and valid, over tasks that already have due dates; the downgrade drops the index
and keeps the column and the dates."""

from sqlalchemy import Connection

from tests.migrations.data import rows

ROWS = [
    {"__tablename__": "users", "id": 7000, "email": "due-dates@example.com", "name": "Owner"},
    {"__tablename__": "projects", "id": 7000, "owner_id": 7000, "name": "Due Dates"},
    {"__tablename__": "tasks", "id": 7001, "project_id": 7000, "title": "dated",
     "due_date": "2026-12-24"},
    {"__tablename__": "tasks", "id": 7002, "project_id": 7000, "title": "undated"},
]
INDEX = ("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
         "WHERE c.relname = 'ix_tasks_due_date'")
DATES = "SELECT id, due_date::text FROM tasks WHERE id BETWEEN 7000 AND 7999 ORDER BY id"
KEPT = [(7001, "2026-12-24"), (7002, None)]


def upgraded(db: Connection) -> None:
    assert rows(db, INDEX) == [(True,)]
    assert rows(db, DATES) == KEPT


def downgraded(db: Connection) -> None:
    assert rows(db, INDEX) == []
    assert rows(db, DATES) == KEPT  # the column stays: only its index goes
