"""Waiting on PostgreSQL with a deadline, and cancelling a statement on a signal.

psycopg2 blocks in C while a statement runs: no Python timeout fires, no signal handler
runs, until the server answers. A database that hangs (paused, stuck on I/O, a network that
drops packets silently) still acknowledges TCP, so neither ``statement_timeout`` (the
server must run to enforce it) nor TCP keepalives end the wait. psycopg2's wait callback
(``set_wait_callback``, what green-thread libraries use) turns every round trip into a
``select()`` in Python, which gives two things:

- a deadline per round trip: a request waits at most that long, then the connection is
  closed (psycopg2 marks it broken and the pool replaces it) and the request fails fast;
- a signal handler that runs during the wait: a handler that raises ``KeyboardInterrupt``
  makes the callback send a cancel request, so the running statement stops at once and its
  transaction rolls back, instead of the signal waiting for the statement to end.

The callback is process-wide. Serving workers install it with a deadline; the migration
path installs it without one (a migration may run long) for the cancellation alone.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable

import psycopg2
from psycopg2 import extensions

from backend.serving.watchdog import NoAnswer


def make_wait_callback(deadline: float | None) -> Callable[[object], None]:
    """A wait callback giving each round trip ``deadline`` seconds (None: no limit)."""

    def wait(conn) -> None:
        ends = None if deadline is None else time.monotonic() + deadline
        while True:
            try:
                state = conn.poll()
                if state == extensions.POLL_OK:
                    return
                left = None if ends is None else ends - time.monotonic()
                if left is not None and left <= 0:
                    raise NoAnswer(f"the database did not answer within {deadline:g}s")
                fd = conn.fileno()
                if state == extensions.POLL_READ:
                    select.select([fd], [], [], left)
                elif state == extensions.POLL_WRITE:
                    select.select([], [fd], [], left)
                else:
                    raise psycopg2.OperationalError(f"unexpected connection state {state}")
            except KeyboardInterrupt:
                # The server ends the statement with "canceling statement due to user
                # request", which surfaces from execute() as QueryCanceled. With nothing
                # to cancel (still connecting), the interrupt goes on up instead.
                try:
                    conn.cancel()
                except psycopg2.Error:
                    raise KeyboardInterrupt from None

    return wait


def install(deadline: float | None) -> None:
    """Make every psycopg2 connection of this process wait through the callback."""
    extensions.set_wait_callback(make_wait_callback(deadline))


def uninstall() -> None:
    extensions.set_wait_callback(None)
