"""The scratch database, and the copy of the source in it."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import URL

from backend.config import mask_url
from backend.migrate import LifecycleError
from backend.migrate.backup import current_revision, take_backup
from backend.migrate.pgtools import find_pg_tool, libpq_connection, server_version_num, tool_error
from migration_tools.rehearse import progress, size_text
from migration_tools.rehearse.findings import Options, Rehearsal
from migration_tools.rehearse.guard import SignalGuard
from migration_tools.scratch import create_database, drop_database, scratch_name


@contextlib.contextmanager
def scratch_database(admin: URL, prefix: str, result: Rehearsal,
                     guard: SignalGuard) -> Iterator[URL]:
    """Create the scratch database; drop it however the block ends."""
    name = scratch_name(prefix)
    result.scratch = name
    try:
        create_database(admin, name, application_name="rehearse")
        progress(f"created scratch database {name} on {mask_url(admin.set(database=''))}")
        guard.scratch = admin.set(database=name)
        yield guard.scratch
    finally:
        guard.scratch = None
        with guard.deferred():
            try:
                drop_database(admin, name, "rehearse")
                progress(f"dropped scratch database {name}")
            except LifecycleError as exc:
                result.fail(f"could not drop the scratch database {name}: {exc}; drop it "
                            f'by hand: DROP DATABASE "{name}" WITH (FORCE)')
                progress(result.problems[-1])




# --- copying ------------------------------------------------------------------------------


def copy_into(options: Options, scratch: URL, workdir: Path) -> None:
    """Fill the scratch database from the source: a fresh dump of it, or the given one."""

    dump = options.from_dump
    if options.from_url is not None:
        source = options.from_url
        progress(f"dumping {mask_url(source)} (pg_dump -Fc; the source is only read)")
        started = time.perf_counter()
        revision = current_revision(source)
        dump = take_backup(source, workdir, revision, revision, keep=1)
        progress(f"dumped in {time.perf_counter() - started:.1f} s "
                 f"({size_text(dump.stat().st_size)})")
    assert dump is not None
    progress(f"restoring {dump.name} into {scratch.database} (pg_restore, "
             f"{options.jobs} job(s))")
    started = time.perf_counter()
    restore_into(scratch, dump, options.jobs)
    progress(f"restored in {time.perf_counter() - started:.1f} s")


def restore_into(scratch: URL, dump: Path, jobs: int) -> None:
    """``pg_restore`` into the empty scratch database, in parallel.

    Not :func:`backend.migrate.backup.restore_backup`, which replaces a database in
    place (``--clean``, one transaction). Here the database is new and thrown away, so
    several jobs may load tables at once, and ``--no-privileges`` lets a production dump
    whose GRANTs name roles this server lacks restore all the same: privileges change
    neither the locks nor the time a revision takes.
    """

    pg_restore = find_pg_tool("pg_restore", server_version_num(scratch))
    conninfo, env, password = libpq_connection(scratch)
    try:
        proc = subprocess.run(
            [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "--no-password",
             f"--jobs={jobs}", f"--dbname={conninfo}", str(dump)],
            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise LifecycleError(f"cannot run {pg_restore}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        raise LifecycleError(f"restore of {dump} into the scratch database failed: "
                             f"{tool_error(proc.stderr, password)}")


