"""One migrator at a time: a PostgreSQL advisory lock around every migration command.

Many replicas may start together. The first takes the lock and migrates; the others wait,
then find nothing pending and go on. The lock is a session lock on the migration
connection, so a migrator that dies (even by SIGKILL) releases it with its connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator

from sqlalchemy import Connection, text

from backend.migrate import LifecycleError
from backend.serving.metrics import MIGRATION_LOCK_WAIT_SECONDS

log = logging.getLogger("backend.lifecycle")

LOCK_NAME = "backend.migrations"
# A fixed positive 63-bit key derived from the name: the same in every process and release.
LOCK_KEY = int.from_bytes(hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big") >> 1
LOG_EVERY = 5.0

_HOLDER = text("""
    SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''),
           left(coalesce(a.query, ''), 200), now() - a.xact_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND ((l.classid::bigint << 32) | l.objid::bigint) = :key
""")


def lock_holder(connection: Connection) -> str:
    """Who holds the migration lock, for the log: pid, application, state and query."""
    row = connection.execute(_HOLDER, {"key": LOCK_KEY}).first()
    connection.commit()
    if row is None:
        return "no one (released meanwhile)"
    pid, app, state, query, _ = row
    return f"pid {pid} ({app or 'unnamed'}, {state}): {' '.join(query.split())}"


@contextlib.contextmanager
def migration_lock(connection: Connection, wait: float) -> Iterator[None]:
    """Hold the advisory lock for the block; wait at most ``wait`` seconds to get it."""
    started = time.monotonic()
    next_log = started
    while not connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}):
        connection.commit()
        now = time.monotonic()
        if now - started >= wait:
            MIGRATION_LOCK_WAIT_SECONDS.labels("gave_up").observe(now - started)
            raise LifecycleError(f"gave up after {wait:g}s waiting for the migration lock, "
                                 f"held by {lock_holder(connection)}")
        if now >= next_log:
            log.info("waiting for the migration lock (%.0fs so far), held by %s",
                     now - started, lock_holder(connection))
            next_log = now + LOG_EVERY
        time.sleep(min(0.2, max(0.01, wait - (now - started))))
    # End the implicit transaction: the session lock outlives it, and Alembic must start
    # each revision's transaction on a clean connection.
    connection.commit()
    waited = time.monotonic() - started
    MIGRATION_LOCK_WAIT_SECONDS.labels("acquired").observe(waited)
    if waited > 0.5:
        log.info("got the migration lock after %.1fs", waited)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a dead connection has released it already
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            connection.commit()
