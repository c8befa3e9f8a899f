"""backfill last seen from posts: a user who posted gets the time of their latest post, a
user already seen keeps that time, a user who never posted stays unseen; the downgrade keeps
every row."""

from sqlalchemy import Connection

from tests.migrations.data import rows

ROWS = [
    {"__tablename__": "users", "id": 5001, "username": "poster", "email": "poster@example.com"},
    {"__tablename__": "users", "id": 5002, "username": "seen", "email": "seen@example.com",
     "last_seen": "2024-03-01T12:00:00+00:00"},
    {"__tablename__": "users", "id": 5003, "username": "lurker", "email": "lurker@example.com"},
    {"__tablename__": "posts", "id": 5101, "user_id": 5001, "body": "first",
     "timestamp": "2024-02-01T08:00:00+00:00"},
    {"__tablename__": "posts", "id": 5102, "user_id": 5001, "body": "latest",
     "timestamp": "2024-02-03T09:30:00+00:00"},
    {"__tablename__": "posts", "id": 5103, "user_id": 5002, "body": "older than seen",
     "timestamp": "2024-01-15T10:00:00+00:00", "status": "draft"},
]


def upgraded(db: Connection) -> None:
    seen = rows(db, "SELECT id, to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"
                    " FROM users WHERE id BETWEEN 5000 AND 5999 ORDER BY id")
    assert seen == [(5001, "2024-02-03 09:30"), (5002, "2024-03-01 12:00"), (5003, None)]


def downgraded(db: Connection) -> None:
    assert rows(db, "SELECT count(*) FROM users WHERE id BETWEEN 5000 AND 5999") == [(3,)]
    assert rows(db, "SELECT count(*) FROM posts WHERE id BETWEEN 5000 AND 5999") == [(3,)]
