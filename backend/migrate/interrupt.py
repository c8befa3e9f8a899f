"""SIGINT or SIGTERM while migrating: cancel the running statement, roll back, one line.

By default Python turns SIGINT into a ``KeyboardInterrupt`` traceback only after the
running statement ends (psycopg2 waits in C), and SIGTERM kills the process without a word.
Inside ``cancel_on_signal`` both raise ``KeyboardInterrupt`` at once: during a statement the
wait callback below sends PostgreSQL a cancel request, the revision's transaction rolls back,
and the advisory lock goes with the connection; between statements the exception unwinds
the same transactions. Either way the caller gets one ``MigrationInterrupted`` line naming
the signal.

psycopg2 blocks in C while a statement runs, and no signal handler runs until the server
answers. Its wait callback (``set_wait_callback``, what green-thread libraries use) turns
each round trip into a ``select()`` in Python, during which a handler does run: one that
raises ``KeyboardInterrupt`` makes the callback send a cancel request, and the statement
stops at once. That loop costs a Python frame per round trip, which the migration path can
afford and the request path cannot: serving workers bound their waits another way
(``backend.serving.watchdog``) and never install it.
"""

from __future__ import annotations

import contextlib
import select
import signal
import threading
from collections.abc import Iterator

import psycopg2
from psycopg2 import extensions

from backend.migrate import LifecycleError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class MigrationInterrupted(LifecycleError):
    """A signal stopped the work; whatever was in progress was rolled back."""


def wait_cancelling_on_interrupt(conn) -> None:
    """psycopg2's wait callback: each round trip in ``select()``; a ``KeyboardInterrupt``
    raised by a signal handler meanwhile cancels the statement in flight."""
    while True:
        try:
            state = conn.poll()
            if state == extensions.POLL_OK:
                return
            fd = conn.fileno()
            if state == extensions.POLL_READ:
                select.select([fd], [], [])
            elif state == extensions.POLL_WRITE:
                select.select([], [fd], [])
            else:
                raise psycopg2.OperationalError(f"unexpected connection state {state}")
        except KeyboardInterrupt:
            # The server ends the statement with "canceling statement due to user
            # request", which surfaces from execute() as QueryCanceled. With nothing to
            # cancel (still connecting), the interrupt goes on up instead.
            try:
                conn.cancel()
            except psycopg2.Error:
                raise KeyboardInterrupt from None


def install_cancelling_wait() -> None:
    """Make every psycopg2 connection of this process wait through the callback above."""
    extensions.set_wait_callback(wait_cancelling_on_interrupt)


def _handled_elsewhere() -> bool:
    """Whether a caller (the rehearsal, say) already handles these signals its own way."""
    defaults = (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None)
    return any(signal.getsignal(signum) not in defaults for signum in SIGNALS)


@contextlib.contextmanager
def cancel_on_signal() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a cancelled statement and one ``MigrationInterrupted``."""
    if threading.current_thread() is not threading.main_thread() or _handled_elsewhere():
        yield  # only the main thread may set handlers; a caller's own handlers stay in charge
        return
    received: list[str] = []

    def interrupt(signum: int, _frame) -> None:
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in SIGNALS}
    callback = extensions.get_wait_callback()
    if callback is None:
        install_cancelling_wait()
    try:
        yield
    except BaseException as exc:
        if not received or isinstance(exc, MigrationInterrupted):
            raise
        detail = str(exc) if isinstance(exc, LifecycleError) else \
            "stopped before it finished; any revision in progress was rolled back"
        raise MigrationInterrupted(f"interrupted by {received[0]}: {detail}") from None
    finally:
        extensions.set_wait_callback(callback)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
