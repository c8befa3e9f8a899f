"""SIGINT and SIGTERM during a rehearsal: stop through the normal ``finally`` blocks,
so the scratch database is dropped."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import URL

from backend.migrate import LifecycleError
from migration_tools.rehearse import progress, rehearsal_sql


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop, clean up, exit 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum




class SignalGuard:
    """SIGINT and SIGTERM stop the rehearsal through the normal ``finally`` blocks.

    The handler raises :class:`KeyboardInterrupt`, but Python runs it only between two
    bytecodes, not while the main thread waits inside libpq for a statement that may run
    for an hour. So a watcher thread also wakes on the signal (``set_wakeup_fd``) and
    cancels every statement running in the scratch database; the wait ends and the
    handler runs. While the scratch database is being dropped signals are only noted: a
    second Ctrl-C must not leave it behind.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.scratch: URL | None = None
        self._defer = False
        self._previous: dict[int, Any] = {}
        self._pipe: tuple[int, int] | None = None
        self._old_wakeup = -1
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> SignalGuard:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._pipe = (read_end, write_end)
        self._old_wakeup = signal.set_wakeup_fd(write_end)
        self._watcher = threading.Thread(target=self._watch, name="rehearse-signals",
                                         daemon=True)
        self._watcher.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        if self._pipe is not None:
            os.close(self._pipe[1])  # the watcher reads end-of-file and returns
            if self._watcher is not None:
                self._watcher.join(timeout=5)
            os.close(self._pipe[0])

    def _handle(self, signum: int, _frame: object) -> None:
        if self._defer:
            progress("dropping the scratch database first")
        if self.received is not None or self._defer:
            self.received = self.received or signum
            return  # raised once already (or cleaning up): the first one is on its way
        self.received = signum
        raise KeyboardInterrupt

    def _watch(self) -> None:
        assert self._pipe is not None
        while True:
            try:
                data = os.read(self._pipe[0], 64)
            except OSError:
                return
            if not data:
                return
            if self.scratch is not None and not self._defer:
                with contextlib.suppress(LifecycleError):
                    rehearsal_sql(self.scratch, "SELECT pg_cancel_backend(pid) FROM "
                                           "pg_stat_activity WHERE datname = "
                                           "current_database() AND pid <> pg_backend_pid()")

    def raise_if_received(self) -> None:
        """A signal may have been absorbed as a cancelled statement: stop all the same."""
        if self.received is not None:
            raise Interrupted(self.received)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
