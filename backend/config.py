"""Settings, read once from the environment when the app is built.

Everything that reaches a log line goes through :func:`mask_url`, so a password in
``DATABASE_URL`` is never printed.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# psycopg2 is the driver we ship; SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3.
DRIVER = "postgresql+psycopg2"
ACCEPTED_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg2")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message is safe to print as is."""


def parse_database_url(raw: str | None, name: str = "DATABASE_URL") -> URL:
    """Turn any accepted spelling of a PostgreSQL URL into one that reaches psycopg2."""
    if raw is None or not raw.strip():
        raise ConfigError(f"{name} is not set: give a PostgreSQL URL such as "
                          "postgresql://user:password@host:5432/dbname")
    raw = raw.strip()
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme not in ACCEPTED_SCHEMES:
        raise ConfigError(f"{name} is malformed: expected a postgresql:// URL, got "
                          f"{_mask_raw(raw)!r}")
    try:
        url = make_url(raw.replace(scheme, DRIVER, 1))
        _ = url.port  # a non-numeric port is only detected when read
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"{name} is malformed: {_mask_raw(raw)!r} ({exc})") from None
    if not url.database:
        raise ConfigError(f"{name} is malformed: no database name in {mask_url(url)!r}")
    return url


def mask_url(url: URL | str) -> str:
    """The URL as text with its password replaced by ``***``."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except (ArgumentError, ValueError):
            return _mask_raw(url)
    return url.set(drivername="postgresql").render_as_string(hide_password=True)


def _mask_raw(raw: str) -> str:
    """Mask ``user:password@`` in text that does not parse as a URL."""
    head, sep, rest = raw.partition("://")
    if not sep or "@" not in rest:
        return raw
    creds, at, tail = rest.rpartition("@")
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{head}{sep}{creds}{at}{tail}"


_PG_DURATION = re.compile(r"^\d+(\.\d+)?\s*(us|ms|s|min|h|d)?$")


def _pg_duration(environ: Mapping[str, str], name: str, default: str) -> str:
    """A PostgreSQL duration ('2s', '500ms', '5min'); checked here so a typo fails at start."""
    raw = environ.get(name, "").strip() or default
    if not _PG_DURATION.match(raw):
        raise ConfigError(f"{name} must be a PostgreSQL duration such as 2s, 500ms or 5min, "
                          f"got {raw!r}")
    return raw


def _int(environ: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {raw!r}")
    return int(raw)


def _flag(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


@dataclass(frozen=True)
class Config:
    """The service's settings. ``repr`` never shows a password."""

    database_url: URL = field(repr=False)
    db_wait_timeout: float = 60.0
    log_format: str = "text"
    # How migrations behave on a live database (README, "Running in production").
    lock_timeout: str = "2s"
    statement_timeout: str = "5min"
    migration_lock_wait: float = 300.0
    migration_retries: int = 5
    migration_retry_delay: float = 1.0
    allow_edited: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        log_format = env.get("LOG_FORMAT", "text").strip().lower() or "text"
        if log_format not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
        return cls(
            database_url=parse_database_url(env.get("DATABASE_URL")),
            db_wait_timeout=_float(env, "DB_WAIT_TIMEOUT", 60.0),
            log_format=log_format,
            lock_timeout=_pg_duration(env, "MIGRATION_LOCK_TIMEOUT", "2s"),
            statement_timeout=_pg_duration(env, "MIGRATION_STATEMENT_TIMEOUT", "5min"),
            migration_lock_wait=_float(env, "MIGRATION_LOCK_WAIT", 300.0),
            migration_retries=_int(env, "MIGRATION_RETRIES", 5, minimum=1),
            migration_retry_delay=_float(env, "MIGRATION_RETRY_DELAY", 1.0),
            allow_edited=_flag(env, "MIGRATION_ALLOW_EDITED"),
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                           for f in dataclasses.fields(self) if f.name != "database_url")
        return f"Config(database_url={mask_url(self.database_url)!r}, {fields})"
