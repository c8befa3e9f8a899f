"""validate task status check: the rows already there pass, the constraint becomes validated;
the downgrade puts it back NOT VALID (dropped and added again), and the rule still holds for
new rows."""

from sqlalchemy import Connection

from tests.migrations.data import rejects, rows

# Written between the two revisions, by code that already knew the rule.
ROWS = [
    {"__tablename__": "users", "id": 3000, "email": "validate-owner@example.com", "name": "Owner"},
    {"__tablename__": "projects", "id": 3000, "owner_id": 3000, "name": "Validated",
     "slug": "validated"},
    {"__tablename__": "tasks", "id": 3001, "project_id": 3000, "title": "new", "status": "doing"},
]
CONSTRAINT = "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_tasks_status'"
BAD_TASK = "INSERT INTO tasks (project_id, title, status) VALUES (3000, 'bad', 'lost')"


def upgraded(db: Connection) -> None:
    assert rows(db, CONSTRAINT) == [(True,)]
    assert rows(db, "SELECT status FROM tasks WHERE id = 3001") == [("doing",)]
    rejects(db, BAD_TASK)


def downgraded(db: Connection) -> None:
    assert rows(db, CONSTRAINT) == [(False,)]
    rejects(db, BAD_TASK)
