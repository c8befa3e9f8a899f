"""Where the database stands against the revision scripts.

The scripts are parsed once per process and kept: ``/readyz`` asks on every request, and
re-reading the ``versions/`` folder each time would cost a disk walk and an import per file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text


@lru_cache(maxsize=8)
def load_scripts(directory: str) -> ScriptDirectory:
    return ScriptDirectory(directory)


def current_revisions(connection: Connection) -> list[str]:
    """The revisions recorded in ``alembic_version``; empty on a database never migrated."""
    if connection.scalar(text("SELECT to_regclass('alembic_version')")) is None:
        return []
    return sorted(connection.scalars(text("SELECT version_num FROM alembic_version")))


@dataclass
class SchemaStatus:
    current: list[str]
    head: list[str]
    pending: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def at_head(self) -> bool:
        return self.reason is None and not self.pending

    def as_dict(self) -> dict:
        data = asdict(self)
        if self.reason is None:
            data.pop("reason")
        return data


def schema_status(connection: Connection, scripts: ScriptDirectory) -> SchemaStatus:
    """Compare the database's revisions with the scripts' heads, naming what is pending."""
    heads = sorted(scripts.get_heads())
    current = current_revisions(connection)
    status = SchemaStatus(current=current, head=heads)
    if len(heads) > 1:
        status.reason = (f"the revision history has {len(heads)} heads ({', '.join(heads)}): "
                         f"merge them with: flask db merge heads -m \"merge heads\"")
        return status
    unknown = [rev for rev in current if _lookup(scripts, rev) is None]
    if unknown:
        status.reason = (f"the database is at revision {', '.join(unknown)}, which this code "
                         "does not know: the code is older than the database")
        return status
    status.pending = pending_revisions(scripts, current)
    if status.pending:
        status.reason = f"{len(status.pending)} revision(s) pending: {', '.join(status.pending)}"
    return status


def pending_revisions(scripts: ScriptDirectory, current: list[str]) -> list[str]:
    """Revisions between the current ones and head, in the order they would be applied."""
    lower = tuple(current) or "base"
    revisions = scripts.iterate_revisions("heads", lower)
    return [rev.revision for rev in reversed(list(revisions))]


def _lookup(scripts: ScriptDirectory, revision: str):
    try:
        return scripts.get_revision(revision)
    except CommandError:
        return None
