"""What each step of a rehearsal found, and the rehearsal as a whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from backend.logs import mask_secrets
from migration_tools import row_loss
from migration_tools.rehearse.observer import Seen, Snapshot, strongest

CHECKS = {
    "downgrades_restore_schema": "the downgrades restore the starting schema",
    "upgrade_repeatable_schema": "the second upgrade gives the same schema",
    "upgrade_repeatable_rows": "the second upgrade gives the same row counts",
    "models_match": "the schema at head matches the models",
}


# --- what a step found -------------------------------------------------------------------


@dataclass
class Step:
    """One revision applied or rolled back, and what it did to the tables."""

    phase: str            # "upgrade", "downgrade" or "re-upgrade"
    revision: str
    message: str
    seconds: float | None = None
    error: str | None = None
    rewrote: dict[str, dict[str, int]] = field(default_factory=dict)
    resized: dict[str, dict[str, int | None]] = field(default_factory=dict)
    locks: dict[str, str] = field(default_factory=dict)
    lock_seconds: dict[str, float] = field(default_factory=dict)
    rows: dict[str, dict[str, int | None]] = field(default_factory=dict)
    lost: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables_before: dict[str, dict[str, int]] = field(default_factory=dict)
    tables_after: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and not any(not v["expected"] for v in self.lost.values())


def rewritten(before: Snapshot, after: Snapshot) -> dict[str, dict[str, int]]:
    """Tables whose storage file changed: PostgreSQL wrote every row anew."""
    return {name: {"bytes_before": state.bytes, "bytes_after": after[name].bytes}
            for name, state in before.items()
            if name in after and after[name].filenode != state.filenode}


def strongest_locks(seen: Seen, before: Snapshot) -> tuple[dict[str, str], dict[str, float]]:
    """The strongest mode held on each table that existed before the step, and for about
    how long (from first sight to the commit that released it).

    A table the revision creates is locked too, but nobody can be waiting for it. The
    time is a lower bound: a lock taken between two samples is first seen a little late.
    """
    names = {state.oid: name for name, state in before.items()}
    modes: dict[str, dict[str, list[float]]] = {}
    for (oid, mode), times in seen.items():
        if oid in names:
            modes.setdefault(names[oid], {})[mode] = times
    locks = {name: strongest(found) for name, found in sorted(modes.items())}
    held = {name: round(modes[name][mode][1] - modes[name][mode][0], 3)
            for name, mode in locks.items()}
    return locks, held


def changes(before: Snapshot, after: Snapshot,
            attribute: str) -> dict[str, dict[str, int | None]]:
    """Tables whose row count (or size) changed; None: the table did not exist.

    A size change without a rewrite is worth seeing too: a backfill ``UPDATE`` writes a
    new version of every row, which can double a table until VACUUM reclaims the old ones.
    """
    found = {}
    for name in sorted(set(before) | set(after)):
        old = getattr(before[name], attribute) if name in before else None
        new = getattr(after[name], attribute) if name in after else None
        if old != new:
            found[name] = {"before": old, "after": new}
    return found


def tables_json(snapshot: Snapshot) -> dict[str, dict[str, int]]:
    return {name: {"rows": s.rows, "bytes": s.bytes} for name, s in sorted(snapshot.items())}


def lost_rows(before: Snapshot, after: Snapshot, expected: dict[str, str],
              reference: Snapshot | None = None) -> dict[str, dict[str, Any]]:
    """:func:`migration_tools.row_loss.lost_rows` on two snapshots, each finding with the
    reason its revision gave for it (``expected``), if any."""
    def rows(snapshot: Snapshot) -> dict[str, int]:
        return {name: state.rows for name, state in snapshot.items()}

    lost = row_loss.lost_rows(rows(before), rows(after),
                              None if reference is None else rows(reference))
    return {name: {"before": was, "after": left, "expected": expected.get(name)}
            for name, (was, left) in sorted(lost.items())}


@dataclass
class Backfill:
    """One background migration run to its end between the two phases, and what it did."""

    phase: str            # "upgrade" or "re-upgrade": the pass it ran in
    name: str
    revision: str         # the revision that registered it
    table: str
    rows: int = 0         # rows its batches changed in this pass
    batches: int = 0
    state: str = ""       # as the runner left it: done, or failed
    error: str | None = None
    bytes_before: int | None = None
    bytes_after: int | None = None

    @property
    def ok(self) -> bool:
        return self.state == "done" and self.error is None


# --- the rehearsal ------------------------------------------------------------------------


@dataclass
class Rehearsal:
    """Everything the report shows; filled in as the rehearsal goes."""

    source: str
    scratch: str = ""
    server: str = ""
    server_version: str = ""
    copy_seconds: float | None = None
    start: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    pending: list[dict[str, str]] = field(default_factory=list)  # with "phase"
    steps: list[Step] = field(default_factory=list)
    backfills: list[Backfill] = field(default_factory=list)
    backfill_seconds: dict[str, float] = field(default_factory=dict)  # per pass
    tables_start: Snapshot = field(default_factory=dict)
    tables_head: Snapshot = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, problem: str) -> None:
        self.problems.append(mask_secrets(problem))

    def check(self, key: str, ok: bool, detail: str) -> None:
        """Record one whole-run check; a failed one is a problem too."""
        title = CHECKS[key]
        self.checks[key] = {"title": title, "ok": ok, "detail": mask_secrets(detail)}
        if not ok:
            self.fail(f"{title}: {detail}")


@dataclass(frozen=True)
class Options:
    """What to rehearse, where, and with which session timeouts (from the command line)."""

    from_url: URL | None
    from_dump: Path | None
    target_url: URL
    prefix: str
    lock_timeout: str
    statement_timeout: str
    verbose: bool
    jobs: int = 1
