"""Where the database stands against the revision scripts.

The scripts are parsed, and their checksums taken, once per state of the ``versions/``
folder: ``/readyz`` asks on every request, and re-reading the folder each time would cost a
disk walk and an import per file; a revision file added or removed (a running development
server, then `flask db upgrade` with a new revision) changes the folder's mtime, and the
next call parses again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text

from backend.migrate import checksums
from backend.migrate.phases import read_phases


def versions_stamp(directory: str) -> int:
    """The versions folder's mtime: it changes whenever a revision file comes or goes."""
    try:
        return os.stat(os.path.join(directory, "versions")).st_mtime_ns
    except OSError:
        return 0


@lru_cache(maxsize=8)
def _scripts(directory: str, stamp: int) -> ScriptDirectory:
    return ScriptDirectory(directory)


@lru_cache(maxsize=8)
def _checksums(directory: str, stamp: int) -> dict[str, str]:
    return checksums.script_checksums(_scripts(directory, stamp))


def load_scripts(directory: str, stamp: int | None = None) -> ScriptDirectory:
    return _scripts(directory, versions_stamp(directory) if stamp is None else stamp)


def disk_checksums(directory: str, stamp: int | None = None) -> dict[str, str]:
    return _checksums(directory, versions_stamp(directory) if stamp is None else stamp)


def forget_scripts() -> None:
    """Parse again on the next call: for a caller that edited files in place (their
    content changed, the folder's mtime may not have)."""
    _scripts.cache_clear()
    _checksums.cache_clear()


# The one reading of where a database stands: its ``alembic_version`` rows and our
# recorded checksums, as ('v', revision, NULL) and ('c', revision, checksum) rows. Every
# reader uses these statements and :func:`parse_state`: the app's connection here,
# /readyz's own (health.py, prepared once per connection), the backups and the tools.
TABLES_SQL = ("SELECT to_regclass('alembic_version') IS NOT NULL, "
              f"to_regclass('{checksums.TABLE}') IS NOT NULL")
VERSIONS_SQL = "SELECT 'v', version_num, NULL FROM alembic_version"
CHECKSUMS_SQL = f"SELECT 'c', revision, checksum FROM {checksums.TABLE}"

StateRows = Sequence[tuple[str, str, str | None]]


def state_sql(has_versions: bool, has_checksums: bool) -> str | None:
    """The state query for the tables that exist (None when neither does: never migrated)."""
    parts = [sql for sql, present in ((VERSIONS_SQL, has_versions),
                                      (CHECKSUMS_SQL, has_checksums)) if present]
    return " UNION ALL ".join(parts) or None


def parse_state(rows: StateRows) -> tuple[list[str], dict[str, str]]:
    """(the applied revisions, sorted; the recorded checksum of each revision)."""
    current = sorted(rev for kind, rev, _ in rows if kind == "v")
    recorded = {rev: (digest or "").strip() for kind, rev, digest in rows if kind == "c"}
    return current, recorded


def read_state(connection: Connection) -> tuple[list[str], dict[str, str]]:
    """The applied revisions and their recorded checksums, in two round trips at most."""
    query = state_sql(*connection.execute(text(TABLES_SQL)).one())
    return parse_state(connection.execute(text(query)).all() if query else [])


def read_state_with_cursor(cursor: Any) -> tuple[list[str], dict[str, str]]:
    """:func:`read_state` on a DB-API (psycopg2) cursor, for readers below SQLAlchemy."""
    cursor.execute(TABLES_SQL)
    query = state_sql(*cursor.fetchone())
    if not query:
        return [], {}
    cursor.execute(query)
    return parse_state(cursor.fetchall())


def current_revisions(connection: Connection) -> list[str]:
    """The revisions recorded in ``alembic_version``; empty on a database never migrated."""
    return read_state(connection)[0]


def label(revisions: Iterable[str]) -> str:
    """How a log line or a report names where a database stands: "a, b", or "base"."""
    return ", ".join(revisions) or "base"


@dataclass
class SchemaStatus:
    current: list[str]
    head: list[str]
    pending: list[str] = field(default_factory=list)
    reason: str | None = None
    edited: list[str] = field(default_factory=list)
    # Revisions a newer release applied on top of this code's head: older code serving on a
    # newer schema, which expand/contract revisions exist to allow (rolling deploys, rollbacks).
    ahead: list[str] = field(default_factory=list)
    # Post-deploy revisions not applied yet: they wait for `flask migrations post-deploy`,
    # and a replica is ready without them (the start never applies them).
    post_deploy_pending: list[str] = field(default_factory=list)

    @property
    def at_head(self) -> bool:
        return self.reason is None and not self.pending

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("edited")
        if self.reason is None:
            data.pop("reason")
        return data


def unknown_reason(unknown: list[str]) -> str:
    return (f"the database is at revision {', '.join(unknown)}, which this code does not "
            "know, and it never held this code's head: it belongs to another branch or "
            "project (or was migrated before checksums were kept); deploy the code that has "
            "that revision")


def ahead_of_code(scripts: ScriptDirectory, current: list[str], recorded: dict[str, str]
                  ) -> list[str]:
    """The database's revisions this code does not know, when the database is *ahead* of
    it: every head of this code was applied to it (``migration_checksums`` keeps a row per
    applied revision) and newer revisions went on top. Empty otherwise: nothing unknown, or
    unknown revisions on a database that never held this code's head."""
    unknown = sorted(rev for rev in current if find_revision(scripts, rev) is None)
    # the pre-deploy heads: this code's post-deploy revisions may not have run yet there
    if unknown and all(head in recorded for head in read_phases(scripts).pre_heads):
        return unknown
    return []


def ahead_note(ahead: list[str], heads: list[str]) -> str:
    return (f"the database is ahead of this code: at {', '.join(ahead)} (newer revisions, "
            f"not in this code), on top of this code's head {', '.join(heads)}")


def edited_reason(scripts: ScriptDirectory, edited: list[str]) -> str:
    names = ", ".join(f"{rev} ({scripts.get_revision(rev).doc})" for rev in edited)
    return (f"revision(s) {names} were edited after they were applied to this database: "
            "review the change, then record it with `flask migrations accept-edits` "
            "(or set MIGRATION_ALLOW_EDITED=1)")


def schema_status(connection: Connection, scripts: ScriptDirectory,
                  on_disk: dict[str, str] | None = None, allow_edited: bool = False,
                  allow_ahead: bool = True) -> SchemaStatus:
    """Compare the database with the scripts: pending revisions, or a reason to refuse."""
    current, recorded = read_state(connection)
    return evaluate(scripts, current, recorded, on_disk, allow_edited, allow_ahead)


def evaluate(scripts: ScriptDirectory, current: list[str], recorded: dict[str, str],
             on_disk: dict[str, str] | None = None, allow_edited: bool = False,
             allow_ahead: bool = True) -> SchemaStatus:
    """The verdict for a database state; pure, so a caller may cache it per state."""
    phases = read_phases(scripts)
    heads = sorted(phases.pre_heads + phases.post_heads)
    status = SchemaStatus(current=list(current), head=heads)
    status.reason = phases.problem()
    if status.reason:
        return status
    unknown = [rev for rev in current if find_revision(scripts, rev) is None]
    ahead = ahead_of_code(scripts, current, recorded) if unknown else []
    if ahead and not allow_ahead:
        status.reason = (f"{ahead_note(ahead, heads)}; MIGRATION_ALLOW_AHEAD=0 refuses to "
                         "serve on it")
        return status
    if unknown and not ahead:
        status.reason = unknown_reason(unknown)
        return status
    status.ahead = ahead
    if ahead:  # what this code knows of the database: at least its whole pre-deploy line
        current = [*phases.pre_heads, *(rev for rev in phases.post if rev in recorded)]
    if on_disk is None:
        on_disk = checksums.script_checksums(scripts)
    status.edited = checksums.edited_revisions(scripts, current, recorded, on_disk)
    if status.edited and not allow_edited:
        status.reason = edited_reason(scripts, status.edited)
        return status
    pending = pending_revisions(scripts, current)
    status.pending = [rev for rev in pending if rev not in phases.post]
    status.post_deploy_pending = [rev for rev in pending if rev in phases.post]
    if status.pending:
        status.reason = f"{len(status.pending)} revision(s) pending: {', '.join(status.pending)}"
    return status


def pending_revisions(scripts: ScriptDirectory, current: list[str]) -> list[str]:
    """Every revision not yet applied, in the order they would be applied.

    Not ``iterate_revisions("heads", current)``: after a merge that lists only what lies
    above the current revision, and misses the other branch the merge brings in.
    """
    applied = set(checksums.applied_chain(scripts, current))
    return [rev.revision for rev in reversed(list(scripts.walk_revisions()))
            if rev.revision not in applied]


def find_revision(scripts: ScriptDirectory, revision: str):
    try:
        return scripts.get_revision(revision)
    except CommandError:
        return None
