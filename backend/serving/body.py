"""A request body that stalls costs its client a 408, not a worker thread.

gunicorn hands the application a blocking socket with no timeout: a client that sends its
headers and then too little body would hold the thread reading it until the client gives
up, if ever, and a few such clients take every thread a worker has. So every request that
announces a body has it read here, before any view runs, within ``BODY_TIMEOUT`` seconds;
views then read it from memory (``request.get_data()``, ``request.get_json()``), whatever
application registers them. A stalled body answers 408 and the connection is closed: the
rest of it is not worth waiting for.
"""

from __future__ import annotations

import time

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import ClientDisconnected


def _refuse(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    response.headers["Connection"] = "close"
    return response


def _read_body() -> Response | None:
    """Read the announced body within the deadline; an answer only when it did not come."""
    if not request.content_length:
        return None
    timeout = current_app.config["SERVICE_CONFIG"].body_timeout
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        sock.settimeout(timeout)  # gunicorn resets it for the connection's next request
    started = time.monotonic()
    try:
        request.get_data(cache=True)
    except (TimeoutError, ClientDisconnected):
        # gunicorn's reader turns the socket's timeout into a short read, which werkzeug
        # reports as a disconnect: the clock tells a stall from a client that hung up.
        if time.monotonic() - started >= timeout * 0.9:
            return _refuse(408, f"request body not received within {timeout:g}s")
        return _refuse(400, "request body ended before its Content-Length")
    return None


def init_app(app: Flask) -> None:
    """Read every request's body within ``BODY_TIMEOUT`` before the views see it."""
    app.before_request(_read_body)
