"""Scratch databases: made on a server for one job, dropped however the job ends.

One home for what verify_migrations, rehearse, the test suite and the benchmarks each need:
a unique, telling name (who made it and when), ``CREATE DATABASE`` outside a transaction,
and a drop that does not wait for sessions left behind (``WITH (FORCE)``, PostgreSQL 13+).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy.engine import URL

from backend.migrate.database import run_sql


def scratch_name(prefix: str) -> str:
    """``<prefix>_<UTC time>_<random>``: unique, and says what made it and when."""
    return f"{prefix}_{datetime.now(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(3)}"


def create_database(server: URL, name: str, template: str | None = None,
                    file_copy: bool = False, application_name: str = "scratch") -> URL:
    """``CREATE DATABASE`` on ``server``'s cluster; the new database's URL.

    Without a template it starts from ``template0``: nothing a site added to ``template1``
    leaks in. ``file_copy`` (PostgreSQL 15+, ignored before) copies a template's files
    instead of WAL-logging every block: far faster for a large template, slower for a small
    one (it forces a checkpoint), so it is the caller's choice.
    """
    clause = f' TEMPLATE "{template}"' if template else " TEMPLATE template0"
    if file_copy and template and int(
            run_sql(server, "SHOW server_version_num", application_name)[0][0]) >= 150000:
        clause += " STRATEGY FILE_COPY"
    run_sql(server, f'CREATE DATABASE "{name}"{clause}', application_name)
    return server.set(database=name)


def drop_database(server: URL, name: str, application_name: str = "scratch") -> None:
    """Drop it even with sessions still connected."""
    run_sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', application_name)


def leftovers(server: URL, prefix: str, application_name: str = "scratch") -> list[str]:
    """Scratch databases of this prefix still on the server: in use now, or left by a job
    that was killed before it could clean up."""
    pattern = prefix.replace("_", "\\_") + "\\_%"
    rows = run_sql(server, "SELECT datname FROM pg_database WHERE datname LIKE "
                           f"'{pattern}' ORDER BY 1", application_name)
    return [row[0] for row in rows]


@contextlib.contextmanager
def scratch_database(server: URL, prefix: str, application_name: str = "scratch"
                     ) -> Iterator[URL]:
    """An empty database for the block, dropped however the block ends."""
    name = scratch_name(prefix)
    url = create_database(server, name, application_name=application_name)
    try:
        yield url
    finally:
        drop_database(server, name, application_name)
