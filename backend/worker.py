"""The gunicorn worker the service runs: gthread, closing its listening socket at once on
SIGTERM.

gunicorn's threaded worker, told to stop, stops *accepting* but keeps its copy of the
listening socket open until its last request is done. The kernel goes on completing
handshakes into the socket's backlog meanwhile, and those connections are reset when the
worker finally exits: a client that connected during the drain gets a reset instead of a
refusal it could retry elsewhere. Closing the socket as soon as the stop begins (in the
worker's own loop, where the poller lives) makes a stopping replica refuse new connections
while it finishes the ones it has.
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


class GracefulThreadWorker(ThreadWorker):
    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self.method_queue.defer(self._stop_listening)

    def _stop_listening(self) -> None:
        self.set_accept_enabled(False)
        for listener in self.sockets:
            listener.close()
