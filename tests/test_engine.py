"""A pooled connection never crosses a fork: a child that checks one out gets its own.

The check needs no table, so it runs on an empty database, whatever application is present.
"""

from __future__ import annotations

import os

from sqlalchemy import text

from backend import create_app
from backend.config import Config
from backend.extensions import db


def backend_pid() -> int:
    return db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_forked_child_gets_a_connection_of_its_own(empty_db):
    # Arrange: the parent holds a pooled connection, as gunicorn's master does after migrating.
    app = create_app(Config(database_url=empty_db))
    with app.app_context():
        parent_backend = backend_pid()
        db.session.remove()  # back to the pool, ready to be (wrongly) reused
        read, write = os.pipe()

        # Act
        child = os.fork()
        if child == 0:  # the child: use the pool, report which server process answered
            try:
                os.write(write, str(backend_pid()).encode())
            finally:
                os._exit(0)
        os.close(write)
        child_backend = int(os.read(read, 64).decode() or 0)
        os.waitpid(child, 0)

        # Assert: different server processes, and the parent's connection still works.
        assert child_backend not in (0, parent_backend)
        assert backend_pid() == parent_backend
        db.engine.dispose()
