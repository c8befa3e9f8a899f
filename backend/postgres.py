"""What serving and the lifecycle share about talking to PostgreSQL: the connection
arguments for a URL, and an exception turned into one line an operator can read."""

from __future__ import annotations

import re

import psycopg2
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from backend.logs import mask_secrets

# libpq prefixes every connection failure with where it tried; the reason comes after.
_PREAMBLE = re.compile(r'^connection to server (at|on socket) "[^"]*"(, port \d+)? failed:\s*')


class OperatorError(RuntimeError):
    """A reason to refuse whose message is already one line, written for an operator and
    safe to print (no password): printed as is, without its type."""


def connect_kwargs(url: URL) -> dict:
    """psycopg2 keyword arguments for a SQLAlchemy URL (host may come from ``?host=``)."""
    kwargs = url.translate_connect_args(username="user", database="dbname")
    kwargs.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    return kwargs


def describe_error(exc: BaseException) -> str:
    """Any exception as one printable line, never with a password: the database's own
    reason (no libpq preamble, no 'FATAL:'), our refusals as written, anything else as its
    type and first line (a typo in a revision is not a database error)."""
    from backend.config import ConfigError

    if isinstance(exc, OperatorError | ConfigError):
        return mask_secrets(_first_line(str(exc)) or type(exc).__name__)
    if isinstance(exc, DBAPIError | psycopg2.Error):
        line = _first_line(str(getattr(exc, "orig", None) or exc)) or type(exc).__name__
        line = _PREAMBLE.sub("", line)
        return mask_secrets(re.sub(r"^(FATAL|ERROR):\s*", "", line))
    text = _first_line(str(exc))
    return mask_secrets(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
