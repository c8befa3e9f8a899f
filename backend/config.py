"""Settings, read once from the environment when the app is built.

Everything that reaches a log line goes through :func:`mask_url`, so a password in
``DATABASE_URL`` is never printed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# The checkout (or /app in the image): where relative directory settings point.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

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
    except (ArgumentError, ValueError):
        # Never the parser's own words: with an unencoded '@' or ':' in the password, the
        # "port" it fails to read is a piece of that password.
        raise ConfigError(f"{name} is malformed: {_mask_raw(raw)!r} (the port is not a number, "
                          "or the URL does not parse; percent-encode @ : / in a password)"
                          ) from None
    if not url.database:
        raise ConfigError(f"{name} is malformed: no database name in {mask_url(url)!r}")
    return url


def _owner_url(env: Mapping[str, str], runtime: URL) -> URL | None:
    """MIGRATION_DATABASE_URL, when set: the same database as DATABASE_URL, as another role."""
    raw = env.get("MIGRATION_DATABASE_URL", "").strip()
    if not raw:
        return None
    owner = parse_database_url(raw, "MIGRATION_DATABASE_URL")
    if (owner.host, owner.port, owner.database, owner.query.get("host")) != \
            (runtime.host, runtime.port, runtime.database, runtime.query.get("host")):
        raise ConfigError("MIGRATION_DATABASE_URL and DATABASE_URL must name the same database "
                          f"(got {mask_url(owner)!r} and {mask_url(runtime)!r}): the first "
                          "is its owner role, the second the role that serves")
    if owner.username == runtime.username:
        return None  # one role after all: the simple mode
    return owner


def database_url_setting(environ: Mapping[str, str] | None = None) -> str:
    """``DATABASE_URL`` as set, or "" when it is unset or blank (compose renders an unset
    ``${VAR:-}`` as ""): the tools' one test for "no database named, use the embedded one"."""
    env = os.environ if environ is None else environ
    return env.get("DATABASE_URL", "").strip()


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


def is_pg_duration(raw: str) -> bool:
    """Whether ``raw`` is a duration PostgreSQL takes for a timeout ('2s', '500ms', '5min')."""
    return bool(_PG_DURATION.match(raw.strip()))


def _pg_duration(environ: Mapping[str, str], name: str, default: str) -> str:
    """A PostgreSQL duration ('2s', '500ms', '5min'); checked here so a typo fails at start."""
    raw = environ.get(name, "").strip() or default
    if not is_pg_duration(raw):
        raise ConfigError(f"{name} must be a PostgreSQL duration such as 2s, 500ms or 5min, "
                          f"got {raw!r}")
    return raw


# An empty value means "not set": compose renders an unset ``${VAR:-}`` as "".
def parse_int(environ: Mapping[str, str], name: str, default: int, minimum: int = 0,
         maximum: int | None = None) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    # isascii: str.isdigit() also accepts superscript and fullwidth digits (U+00B9, U+FF11).
    ok = raw.isascii() and raw.isdigit() and minimum <= int(raw) <= (maximum or int(raw))
    if not ok:
        upper = f" and <= {maximum}" if maximum else ""
        raise ConfigError(f"{name} must be a whole number >= {minimum}{upper}, got {raw!r}")
    return int(raw)


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_flag(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    """A yes/no setting, spelled the same way for every flag of the service."""
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {raw!r}")


def _float(environ: Mapping[str, str], name: str, default: float, positive: bool = False
           ) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    # float() takes 'nan' and 'inf'; a wait of "nan" seconds would never end.
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "a positive" if positive else "a non-negative"
        raise ConfigError(f"{name} must be {kind} number of seconds, got {raw!r}")
    return value


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _directory(environ: Mapping[str, str], name: str, default: str) -> Path:
    """A directory setting; a relative one is relative to the project's root, wherever the
    command runs from."""
    directory = Path(environ.get(name, "").strip() or default)
    return directory if directory.is_absolute() else PROJECT_ROOT / directory


def _metrics_port(environ: Mapping[str, str], port: int) -> int | None:
    """``METRICS_PORT``: a second port gunicorn listens on, the only one that answers
    ``/metrics`` (and that answers nothing else); None (unset): ``/metrics`` is served on
    ``PORT``."""
    if not environ.get("METRICS_PORT", "").strip():
        return None
    metrics_port = parse_int(environ, "METRICS_PORT", 0, minimum=1, maximum=65535)
    if metrics_port == port:
        raise ConfigError(f"METRICS_PORT must differ from PORT ({port}): it is a second port "
                          "that serves /metrics alone; leave it unset to serve /metrics on "
                          "PORT")
    return metrics_port


def log_format_from(environ: Mapping[str, str] | None = None) -> str:
    """``LOG_FORMAT`` alone, for the tools that log before (or without) a whole ``Config``.
    A value they do not understand means text; the service itself refuses it at start."""
    try:
        return _choice(os.environ if environ is None else environ, "LOG_FORMAT",
                       ("text", "json"), "text")
    except ConfigError:
        return "text"


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...], default: str
            ) -> str:
    """One of ``choices``, in any case."""
    raw = environ.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Config:
    """The service's settings. ``repr`` never shows a password."""

    database_url: URL = field(repr=False)
    # The owner role's URL (MIGRATION_DATABASE_URL): migrations, backups and background
    # migrations run as it, and DATABASE_URL is then the runtime role, which can read and
    # write the application's rows and nothing more. None: DATABASE_URL does both.
    migration_database_url: URL | None = field(default=None, repr=False)
    db_wait_timeout: float = 60.0
    log_format: str = "text"
    # How migrations behave on a live database (docs/operations.md).
    lock_timeout: str = "2s"
    statement_timeout: str = "5min"
    migration_lock_wait: float = 300.0
    migration_retries: int = 5
    migration_retry_delay: float = 1.0
    allow_edited: bool = False
    # Serve (and let `flask db upgrade` do nothing) on a schema a newer release migrated.
    allow_ahead: bool = True
    # How the service serves (gunicorn.conf.py reads these; docs/operations.md, "Settings").
    port: int = 8000
    web_concurrency: int = 2
    threads: int = 4
    worker_timeout: int = 30
    graceful_timeout: int = 20
    log_level: str = "info"
    access_log: bool = True
    migrate_on_start: bool = True
    # /metrics (docs/operations.md, "Metrics"): METRICS=off records nothing and answers 404;
    # METRICS_PORT moves /metrics to a port of its own, which answers nothing else.
    metrics: bool = True
    metrics_port: int | None = None
    # Seconds one request's statement may run (server side) and wait for an answer (client
    # side, one second more): a hung database costs a request this long, not a worker.
    db_query_timeout: float = 5.0
    # Seconds a client may take to send a request body: a stalled upload holds a thread
    # only this long.
    body_timeout: float = 10.0
    # A pg_dump before pending revisions run (docs/operations.md, "Backups and restore"). Off by
    # default: a dump of a large database can take longer than a deploy may wait, so it is
    # a choice to make, not a surprise.
    backup_before_migrate: bool = False
    backup_dir: Path = PROJECT_ROOT / "backups"
    backup_keep: int = 5
    # Background migrations (flask migrations backfill run): the duration a batch aims at,
    # the largest batch, and the health signals that pause the runner (seconds).
    backfill_batch_seconds: float = 0.5
    backfill_max_batch_size: int = 50_000
    backfill_max_transaction_age: float = 300.0
    backfill_max_lock_wait: float = 5.0
    backfill_max_replication_lag: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        log_format = _choice(env, "LOG_FORMAT", ("text", "json"), "text")
        database_url = parse_database_url(env.get("DATABASE_URL"))
        port = parse_int(env, "PORT", 8000, minimum=1, maximum=65535)
        return cls(
            database_url=database_url,
            migration_database_url=_owner_url(env, database_url),
            db_wait_timeout=_float(env, "DB_WAIT_TIMEOUT", 60.0),
            log_format=log_format,
            lock_timeout=_pg_duration(env, "MIGRATION_LOCK_TIMEOUT", "2s"),
            statement_timeout=_pg_duration(env, "MIGRATION_STATEMENT_TIMEOUT", "5min"),
            migration_lock_wait=_float(env, "MIGRATION_LOCK_WAIT", 300.0),
            migration_retries=parse_int(env, "MIGRATION_RETRIES", 5, minimum=1),
            migration_retry_delay=_float(env, "MIGRATION_RETRY_DELAY", 1.0),
            allow_edited=parse_flag(env, "MIGRATION_ALLOW_EDITED"),
            allow_ahead=parse_flag(env, "MIGRATION_ALLOW_AHEAD", default=True),
            port=port,
            web_concurrency=parse_int(env, "WEB_CONCURRENCY", 2, minimum=1, maximum=64),
            threads=parse_int(env, "GUNICORN_THREADS", 4, minimum=1, maximum=256),
            worker_timeout=parse_int(env, "GUNICORN_TIMEOUT", 30, minimum=1),
            graceful_timeout=parse_int(env, "GUNICORN_GRACEFUL_TIMEOUT", 20, minimum=1),
            log_level=_choice(env, "GUNICORN_LOG_LEVEL", LOG_LEVELS, "info"),
            access_log=parse_flag(env, "ACCESS_LOG", default=True),
            migrate_on_start=parse_flag(env, "MIGRATE_ON_START", default=True),
            metrics=parse_flag(env, "METRICS", default=True),
            metrics_port=_metrics_port(env, port),
            db_query_timeout=_float(env, "DB_QUERY_TIMEOUT", 5.0, positive=True),
            body_timeout=_float(env, "BODY_TIMEOUT", 10.0, positive=True),
            backup_before_migrate=parse_flag(env, "BACKUP_BEFORE_MIGRATE"),
            backup_dir=_directory(env, "BACKUP_DIR", "backups"),
            backup_keep=parse_int(env, "BACKUP_KEEP", 5, minimum=1),
            backfill_batch_seconds=_float(env, "BACKFILL_BATCH_SECONDS", 0.5, positive=True),
            backfill_max_batch_size=parse_int(env, "BACKFILL_MAX_BATCH_SIZE", 50_000, minimum=1),
            backfill_max_transaction_age=_float(env, "BACKFILL_MAX_TRANSACTION_AGE", 300.0,
                                                positive=True),
            backfill_max_lock_wait=_float(env, "BACKFILL_MAX_LOCK_WAIT", 5.0, positive=True),
            backfill_max_replication_lag=_float(env, "BACKFILL_MAX_REPLICATION_LAG", 60.0,
                                                positive=True),
        )

    @classmethod
    def for_url(cls, url: URL | str, environ: Mapping[str, str] | None = None) -> Config:
        """The settings from the environment, for the database at ``url`` instead of
        ``DATABASE_URL``'s: what a tool that works on another database (a scratch copy, the
        embedded development server) runs with."""
        env = os.environ if environ is None else environ
        if isinstance(url, URL):
            url = url.render_as_string(hide_password=False)
        return cls.from_env({**env, "DATABASE_URL": url, "MIGRATION_DATABASE_URL": ""})

    @property
    def owner_url(self) -> URL:
        """Where schema changes, backups and background migrations connect."""
        return self.migration_database_url or self.database_url

    @property
    def runtime_role(self) -> str | None:
        """The role that serves, when it is not the owner: the lifecycle keeps its grants."""
        if self.migration_database_url is None:
            return None
        return self.database_url.username

    def __repr__(self) -> str:
        hidden = ("database_url", "migration_database_url")
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                           for f in dataclasses.fields(self) if f.name not in hidden)
        owner = mask_url(self.migration_database_url) if self.migration_database_url else None
        return (f"Config(database_url={mask_url(self.database_url)!r}, "
                f"migration_database_url={owner!r}, {fields})")


if __name__ == "__main__":
    # `python -m backend.config`: check every setting, as the entrypoint does before serving.
    import sys

    try:
        Config.from_env()
    except ConfigError as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        sys.exit(2)
    print("settings ok")
