"""A deadline on every database round trip of a serving worker, kept out of the query's way.

psycopg2 blocks in C while the server works, with the GIL released: the cheapest wait there
is. But a database that hangs (paused, stuck on I/O, a network that drops packets without a
word) still acknowledges TCP, so neither ``statement_timeout`` (the server must run to
enforce it) nor TCP keepalives end that wait. A wait callback could bound it, at the price
of running psycopg2's send/receive loop in Python, holding the GIL, on every query of every
request.

Instead each round trip (``execute``, ``executemany``, ``commit``, ``rollback``) notes when
it began in a dict, and one thread per worker process looks at that dict when the oldest
round trip would pass the deadline: it shuts down the socket of any round trip past it.
The blocked call then returns at once with "server closed the connection", raised as
:class:`NoAnswer`; psycopg2 marks the connection closed and the pool replaces it. Per query
that costs two dict operations and a clock read; the thread wakes once per deadline when
there is nothing to watch.

``shutdown()`` on a duplicate of the socket's descriptor acts on the socket itself, so
libpq's own descriptor sees the end of the stream; closing the duplicate leaves libpq's
descriptor open for psycopg2 to close as usual. A round trip that ends in the instant
between the check and the shutdown loses its connection for nothing: the next use fails
fast and the pool connects anew. Nothing is ever answered from a cut connection.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import psycopg2
from psycopg2 import extensions


class NoAnswer(psycopg2.OperationalError):
    """The database did not answer one round trip within the deadline."""


_busy: dict[int, tuple[float, Any]] = {}  # id(connection) -> (began, connection)
_cut: set[int] = set()                    # connections whose socket the watchdog shut
_deadline: list[float] = []               # set once per process by start()
_started_in: list[int] = []               # the pid whose thread runs: none crosses a fork


def _round_trip(conn: Any, call, *args):
    key = id(conn)
    _busy[key] = (time.monotonic(), conn)
    try:
        return call(*args)
    except psycopg2.OperationalError:
        if key in _cut:
            _cut.discard(key)
            raise NoAnswer(f"the database did not answer within {_deadline[0]:g}s") from None
        raise
    finally:
        _busy.pop(key, None)


class WatchedCursor(extensions.cursor):
    def execute(self, query, vars=None):
        return _round_trip(self.connection, super().execute, query, vars)

    def executemany(self, query, vars_list):
        return _round_trip(self.connection, super().executemany, query, vars_list)


class WatchedConnection(extensions.connection):
    """``connection_factory`` for psycopg2.connect: round trips the watchdog can bound."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cursor_factory = WatchedCursor

    def commit(self) -> None:
        _round_trip(self, super().commit)

    def rollback(self) -> None:
        _round_trip(self, super().rollback)


def _shut(conn: Any) -> None:
    try:
        duplicate = socket.socket(fileno=os.dup(conn.fileno()))
    except (OSError, psycopg2.Error):
        return  # already closed
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        duplicate.close()


def _watch(deadline: float) -> None:
    while True:
        now = time.monotonic()
        wake = now + deadline
        for key, entry in list(_busy.items()):
            ends = entry[0] + deadline
            if ends > now:
                wake = min(wake, ends)
            elif _busy.get(key) is entry:  # still the same round trip
                _cut.add(key)
                _shut(entry[1])
        time.sleep(max(wake - time.monotonic(), 0.01))


def start(deadline: float) -> None:
    """Bound every round trip of this process's watched connections by ``deadline``
    seconds. Once per process: a worker calls it after the fork (threads do not survive
    one), and a later call in the same process keeps the first deadline."""
    if _started_in and _started_in[0] == os.getpid():
        return
    _started_in[:] = [os.getpid()]
    _deadline[:] = [deadline]
    _busy.clear()
    _cut.clear()
    threading.Thread(target=_watch, args=(deadline,), name="db-deadline", daemon=True).start()
