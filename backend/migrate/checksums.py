"""Detect a revision file edited after it was applied.

Alembic trusts the files: edit an applied revision and the database silently differs from
what the code says it is. We record a checksum of each file as it is applied, in the same
transaction as Alembic's version row, and compare at every start.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

TABLE = "migration_checksums"
CREATE_TABLE = text(f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        revision varchar(64) PRIMARY KEY,
        checksum char(64) NOT NULL,
        filename text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now()
    )
""")
_UPSERT = text(f"""
    INSERT INTO {TABLE} (revision, checksum, filename) VALUES (:revision, :checksum, :filename)
    ON CONFLICT (revision) DO UPDATE
    SET checksum = EXCLUDED.checksum, filename = EXCLUDED.filename, recorded_at = now()
""")


# A revision fixed on purpose after it shipped names the checksum its earlier file had, with
# a reason: databases that applied the earlier file then accept the new one (anything else
# that changed it still counts as an edit). One line per earlier version.
EARLIER_VERSION = re.compile(
    r"^[ \t]*#[ \t]*checksum-of-earlier-version:[ \t]*([0-9a-f]{64})[ \t]+(\S.*?)[ \t]*$", re.M)


def file_checksum(path: str | Path) -> str:
    """sha256 of the file with line endings normalised, so a checkout on Windows still matches."""
    return hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def script_checksums(scripts: ScriptDirectory) -> dict[str, str]:
    return {rev.revision: file_checksum(rev.path) for rev in scripts.walk_revisions()}


def ensure_table(connection: Connection) -> None:
    """Create the table once. Looked up first: CREATE TABLE IF NOT EXISTS still needs the
    right to create in the schema, which a role that only serves does not have."""
    if connection.execute(text(f"SELECT to_regclass('{TABLE}')")).scalar() is None:
        connection.execute(CREATE_TABLE)


def record(connection: Connection, revision: str, path: str | Path,
           checksum: str | None = None) -> None:
    """Store the file's checksum (given when already computed, else read now)."""
    connection.execute(_UPSERT, {"revision": revision,
                                 "checksum": checksum or file_checksum(path),
                                 "filename": Path(path).name})


def forget(connection: Connection, revision: str) -> None:
    connection.execute(text(f"DELETE FROM {TABLE} WHERE revision = :revision"),
                       {"revision": revision})


def latest(connection: Connection, revisions: list[str]) -> str | None:
    """Of these applied revisions, the one applied last (each commits its row with it)."""
    if connection.execute(text(f"SELECT to_regclass('{TABLE}')")).scalar() is None:
        return None
    return connection.execute(
        text(f"SELECT revision FROM {TABLE} WHERE revision = ANY(:revisions) "
             "ORDER BY recorded_at DESC, revision LIMIT 1"),
        {"revisions": list(revisions)}).scalar()


def applied_chain(scripts: ScriptDirectory, current: list[str]) -> list[str]:
    """Every revision the database has applied: the current ones and all their ancestors."""
    if not current:
        return []
    return [rev.revision for rev in scripts.iterate_revisions(tuple(current), "base")]


def earlier_versions(path: str | Path) -> set[str]:
    """The checksums of the earlier versions a revision file declares it replaces."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return set()
    return {digest for digest, _reason in EARLIER_VERSION.findall(text)}


def edited_revisions(scripts: ScriptDirectory, current: list[str],
                     recorded: dict[str, str], on_disk: dict[str, str]) -> list[str]:
    """Applied revisions whose file no longer matches the checksum recorded when applied
    (nor an earlier version the file declares it replaces)."""
    return [rev for rev in applied_chain(scripts, current)
            if rev in recorded and rev in on_disk and recorded[rev] != on_disk[rev]
            and recorded[rev] not in earlier_versions(scripts.get_revision(rev).path)]
