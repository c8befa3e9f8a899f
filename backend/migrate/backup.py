"""Backups with ``pg_dump``: one before migrations are applied, and by hand, and restores.

A revision that applies cleanly can still destroy data (a dropped column, a bad backfill).
Alembic's downgrade restores the schema, never the rows, so the only way back is a dump
taken just before. This module takes that dump, keeps the newest few, and restores one.

The password never appears in a command line (``ps`` shows those to every user): it reaches
the client tools through ``PGPASSWORD``. Dumps are private to their owner from the first
byte: they are written under a temporary name created with mode 0600, then renamed.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import URL

from backend.config import Config, mask_url, parse_database_url
from backend.migrate import LifecycleError
from backend.migrate.database import connect, run_sql
from backend.migrate.pgtools import find_pg_tool, libpq_connection, server_version_num, tool_error
from backend.migrate.revisions import label, read_state_with_cursor

log = logging.getLogger("backend.lifecycle")

DUMP_SUFFIX = ".dump"
# 20261125T093000Z_<from>_to_<to>.dump, with an optional -N when two share a second.
DUMP_NAME = re.compile(r"^(?P<time>\d{8}T\d{6}Z)_(?P<from>[\w.+-]+?)_to_(?P<to>[\w.+-]+?)"
                       r"(?:-(?P<n>\d+))?\.dump$")


# --- settings ---------------------------------------------------------------------------


def current_revision(url: URL) -> list[str]:
    """The revisions in ``alembic_version`` (empty when the table is missing)."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            return read_state_with_cursor(cur)[0]
    finally:
        conn.close()


def _as_url(url: URL | str) -> URL:
    return parse_database_url(url) if isinstance(url, str) else url


# --- backups ---------------------------------------------------------------------------


def _file_label(revision: str | Sequence[str] | None) -> str:
    """The revisions as a dump's file name carries them: "a+b", or "base"."""
    if revision is None or isinstance(revision, str):
        revisions = [revision] if revision else []
    else:
        revisions = [r for r in revision if r]
    text = "+".join(revisions) or "base"
    return re.sub(r"[^\w.+-]", "-", text)


def dump_files(backup_dir: Path) -> list[Path]:
    """Our dumps in ``backup_dir``, oldest first (by the time in their names)."""
    if not backup_dir.is_dir():
        return []
    found = [p for p in backup_dir.iterdir() if DUMP_NAME.match(p.name) and p.is_file()]

    def order(path: Path) -> tuple[str, int, str]:
        match = DUMP_NAME.match(path.name)
        assert match is not None
        return match["time"], int(match["n"] or 0), path.name

    return sorted(found, key=order)


def prune_backups(backup_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` dumps; return what was deleted.

    Only files named like our dumps are considered: anything else in the directory (a
    dump someone renamed to keep it, notes, a half-written temporary) is left alone.
    """
    if keep < 1:
        raise LifecycleError(f"keep must be at least 1, got {keep}")
    old = dump_files(backup_dir)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
        log.info("deleted old backup %s", path)
    return old


def take_backup(url: URL | str, backup_dir: Path, from_rev: str | Sequence[str] | None,
                to_rev: str | Sequence[str] | None, keep: int = 5) -> Path:
    """Dump the database at ``url`` (``pg_dump -Fc``) into ``backup_dir``; return the file.

    Named ``<UTC time>_<from>_to_<to>.dump`` so a listing shows when each was taken and
    which migration it guards. A failure raises :class:`LifecycleError` with one line and
    leaves no file; on success only the newest ``keep`` dumps remain.
    """
    url = _as_url(url)
    if keep < 1:
        raise LifecycleError(f"keep must be at least 1, got {keep}")
    pg_dump = find_pg_tool("pg_dump", server_version_num(url))
    conninfo, env, password = libpq_connection(url)

    backup_dir = Path(backup_dir)
    try:
        backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(dir=backup_dir, prefix=".", suffix=".dump.partial")
    except OSError as exc:
        raise LifecycleError(f"cannot write a backup in {backup_dir}: "
                             f"{exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    started = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        try:
            proc = subprocess.run(
                [pg_dump, "--format=custom", "--no-password", f"--dbname={conninfo}"],
                stdout=fd, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                text=True, check=False,
            )
        except OSError as exc:
            raise LifecycleError(f"cannot run {pg_dump}: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            raise LifecycleError(f"pg_dump of {mask_url(url)} failed: "
                                 f"{tool_error(proc.stderr, password)}")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        final = _free_name(backup_dir, f"{stamp}_{_file_label(from_rev)}_to_{_file_label(to_rev)}")
        os.replace(tmp, final)
        _fsync_dir(backup_dir)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    elapsed = time.perf_counter() - started
    size = final.stat().st_size
    log.info("backed up %s to %s (%d bytes in %.3fs)", mask_url(url), final, size, elapsed,
             extra={"fields": {"path": str(final), "bytes": size, "seconds": round(elapsed, 3)}})
    prune_backups(backup_dir, keep)
    return final


def _free_name(backup_dir: Path, stem: str) -> Path:
    """``stem.dump``, or ``stem-N.dump`` when a dump of the same second already exists."""
    candidate = backup_dir / f"{stem}{DUMP_SUFFIX}"
    n = 0
    while candidate.exists():
        n += 1
        candidate = backup_dir / f"{stem}-{n}{DUMP_SUFFIX}"
    return candidate


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: a backup that vanishes in a crash is no backup."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def backup_before_migrate(url: URL | str, current: str | Sequence[str] | None,
                          head: str | Sequence[str] | None, settings: Config) -> Path | None:
    """Take the pre-migration dump when ``BACKUP_BEFORE_MIGRATE`` asks for it.

    Meant to run just before pending revisions are applied: if the dump fails, the
    :class:`LifecycleError` stops the migration, since someone asked not to migrate
    without one.
    """
    if not settings.backup_before_migrate:
        return None
    return take_backup(url, settings.backup_dir, current, head, settings.backup_keep)


# --- restore ---------------------------------------------------------------------------


def _dump_tables(pg_restore: str, dump: Path, env: dict[str, str]) -> set[str] | None:
    """``schema.table`` for every table in the dump's table of contents (None if unreadable)."""
    proc = subprocess.run([pg_restore, "--list", str(dump)], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        return None
    found = re.findall(r"^\d+; \d+ \d+ TABLE (\S+) (\S+) ", proc.stdout, re.M)
    return {f"{schema}.{table}" for schema, table in found}


def _database_tables(url: URL) -> set[str]:
    rows = run_sql(url, """
        SELECT n.nspname || '.' || c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
          AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
    """)
    return {row[0] for row in rows}


def restore_backup(url: URL | str, dump: Path) -> None:
    """Replace what the dump holds in the database at ``url`` with the dump's contents.

    ``pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error``: all
    or nothing, and owned by whoever restores. ``--clean`` drops only the objects the dump
    has, so a table created after the dump (by a later migration) survives: it is named in
    a warning, because the next ``flask db upgrade`` would trip over it. Stop the service
    first; the restore takes exclusive locks on every table it replaces.
    """
    url = _as_url(url)
    dump = Path(dump)
    if not dump.is_file():
        raise LifecycleError(f"no such backup file: {dump}")
    pg_restore = find_pg_tool("pg_restore", server_version_num(url))
    conninfo, env, password = libpq_connection(url)
    started = time.perf_counter()
    proc = subprocess.run(
        [pg_restore, "--clean", "--if-exists", "--no-owner", "--single-transaction",
         "--exit-on-error", "--no-password", f"--dbname={conninfo}", str(dump)],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False,
    )
    if proc.returncode != 0:
        raise LifecycleError(f"restore of {dump} into {mask_url(url)} failed, nothing changed: "
                             f"{tool_error(proc.stderr, password)}")
    elapsed = time.perf_counter() - started
    log.info("restored %s into %s in %.3fs; the database is at revision %s", dump,
             mask_url(url), elapsed, label(current_revision(url)),
             extra={"fields": {"path": str(dump), "seconds": round(elapsed, 3)}})
    in_dump = _dump_tables(pg_restore, dump, env)
    if in_dump is not None:
        extra = sorted(_database_tables(url) - in_dump)
        if extra:
            log.warning("tables not in the backup were left as they were: %s; drop them "
                        "if a later migration created them", ", ".join(extra))


# --- command line ----------------------------------------------------------------------


def describe_dump(dump: Path) -> str:
    match = DUMP_NAME.match(dump.name)
    size = dump.stat().st_size
    if not match:
        return f"{dump} ({size} bytes)"
    taken = datetime.strptime(match["time"], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{dump} ({size} bytes, taken {taken} before {match['from']} -> {match['to']})"
