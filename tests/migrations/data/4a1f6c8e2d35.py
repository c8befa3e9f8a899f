"""add user api token: users from before it keep every field and have no token (nobody
can sign in as them with any token); two users can never share a token's digest. The
downgrade drops the column and its index; the users stay."""

from sqlalchemy import Connection

from tests.migrations.data import rejects, rows

ROWS = [
    {"__tablename__": "users", "id": 10000, "email": "before-tokens@example.com",
     "name": "Before"},
    {"__tablename__": "users", "id": 10001, "email": "also-before@example.com", "name": "Also"},
]
DIGEST = "a" * 64


def upgraded(db: Connection) -> None:
    assert rows(db, "SELECT id, email, name, token_hash FROM users "
                    "WHERE id BETWEEN 10000 AND 10999 ORDER BY id") == [
        (10000, "before-tokens@example.com", "Before", None),
        (10001, "also-before@example.com", "Also", None)]
    rows(db, "UPDATE users SET token_hash = :digest WHERE id = 10000 RETURNING id",
         digest=DIGEST)
    rejects(db, "UPDATE users SET token_hash = :digest WHERE id = 10001", digest=DIGEST)


def downgraded(db: Connection) -> None:
    assert rows(db, "SELECT count(*) FROM information_schema.columns "
                    "WHERE table_name = 'users' AND column_name = 'token_hash'") == [(0,)]
    assert rows(db, "SELECT id, email FROM users WHERE id BETWEEN 10000 AND 10999 "
                    "ORDER BY id") == [(10000, "before-tokens@example.com"),
                                       (10001, "also-before@example.com")]
