"""SIGINT or SIGTERM while migrating: cancel the running statement, roll back, one line.

By default Python turns SIGINT into a ``KeyboardInterrupt`` traceback only after the
running statement ends (psycopg2 waits in C), and SIGTERM kills the process without a word.
Inside ``cancel_on_signal`` both raise ``KeyboardInterrupt`` at once: during a statement the
wait callback (``backend.serving.deadline``) sends PostgreSQL a cancel request, the revision's
transaction rolls back, and the advisory lock goes with the connection; between statements
the exception unwinds the same transactions. Either way the caller gets one
``MigrationInterrupted`` line naming the signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from psycopg2 import extensions

from backend.migrate import LifecycleError
from backend.serving import deadline

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class MigrationInterrupted(LifecycleError):
    """A signal stopped the work; whatever was in progress was rolled back."""


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
        deadline.install(None)
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
