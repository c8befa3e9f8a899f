"""The gunicorn worker the service runs: gthread, closing its listening socket at once on
SIGTERM; and what every worker does before it serves (``prepare_worker``), the first ones
and any re-fork.

gunicorn's threaded worker, told to stop, stops *accepting* but keeps its copy of the
listening socket open until its last request is done. The kernel goes on completing
handshakes into the socket's backlog meanwhile, and those connections are reset when the
worker finally exits: a client that connected during the drain gets a reset instead of a
refusal it could retry elsewhere. Closing the socket as soon as the stop begins (in the
worker's own loop, where the poller lives) makes a stopping replica refuse new connections
while it finishes the ones it has.
"""

from __future__ import annotations

from flask import Flask
from gunicorn.workers.gthread import ThreadWorker

from backend.extensions import db
from backend.serving import watchdog
from backend.serving.engine import limit_request_time


class GracefulThreadWorker(ThreadWorker):
    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self.method_queue.defer(self._stop_listening)

    def _stop_listening(self) -> None:
        self.set_accept_enabled(False)
        for listener in self.sockets:
            listener.close()


def prepare_worker(app: Flask) -> None:
    """Bound every database wait of this worker: the server stops a statement after
    ``DB_QUERY_TIMEOUT``; the client gives up one second later if the server cannot."""

    config = app.config["SERVICE_CONFIG"]
    watchdog.start(config.db_query_timeout + 1)
    with app.app_context():
        # Forget (without closing) anything inherited; the checkout guard in
        # backend.serving.engine would refuse it anyway.
        db.engine.dispose(close=False)
        limit_request_time(db.engine, config.db_query_timeout)
