"""The rehearsal's report: Markdown for a person or a CI log, JSON for a machine."""

from __future__ import annotations

import dataclasses
from typing import Any

from backend.migrate.revisions import label
from migration_tools.rehearse import size_text
from migration_tools.rehearse.findings import CHECKS, Backfill, Rehearsal, Step, tables_json
from migration_tools.rehearse.observer import LOCK_BLOCKS, LOCK_MODES

# --- the report ---------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def _find(result: Rehearsal, phase: str, revision: str) -> Step | None:
    return next((s for s in result.steps if s.phase == phase and s.revision == revision), None)


def _time_cell(step: Step | None) -> str:
    if step is None:
        return "not run"
    return f"**failed** after {_seconds(step.seconds)}" if step.error else _seconds(step.seconds)


def _rewrote_cell(step: Step | None) -> str:
    if step is None:
        return "-"
    return ", ".join(f"{name} ({size_text(sizes['bytes_after'])})"
                     for name, sizes in step.rewrote.items())


def _size_cell(step: Step | None) -> str:
    if step is None:
        return "-"
    return ", ".join(f"{name} {size_text(c['before']) if c['before'] is not None else 'new'} -> "
                     f"{size_text(c['after']) if c['after'] is not None else 'dropped'}"
                     for name, c in step.resized.items())


def _locks_cell(step: Step | None) -> str:
    if step is None:
        return "-"
    return ", ".join(f"{name}: {mode} for {_held(step.lock_seconds[name])}"
                     for name, mode in step.locks.items())


def _held(seconds: float) -> str:
    return "< 0.01 s" if seconds < 0.005 else f"{seconds:.2f} s"


def _rows_cell(step: Step | None) -> str:
    if step is None:
        return "-"
    parts = []
    for name, change in step.rows.items():
        old, new = change["before"], change["after"]
        if name in step.lost:
            reason = step.lost[name]["expected"]
            verdict = f"expected: {reason}" if reason else "**LOST**"
            parts.append(f"{name} {old} -> {new if new is not None else 'dropped'} ({verdict})")
        elif old is None:
            parts.append(f"{name} new ({new})")
        elif new is None:
            parts.append(f"{name} dropped (had {old})")
        else:
            parts.append(f"{name} {old} -> {new}")
    return ", ".join(parts)


def _revision_row(result: Rehearsal, pending: dict[str, str], phase: str) -> str:
    rev = pending["revision"]
    step = _find(result, phase, rev)
    post = phase == "downgrade" and pending.get("phase") == "post-deploy"
    cells = [f"`{rev}`", pending["message"] + (" (post-deploy)" if post else "")]
    if phase == "upgrade":
        cells += [_time_cell(step), _time_cell(_find(result, "downgrade", rev)),
                  _time_cell(_find(result, "re-upgrade", rev))]
    else:
        cells.append(_time_cell(step))
    cells += [_rewrote_cell(step), _size_cell(step), _locks_cell(step), _rows_cell(step)]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


UPGRADE_HEADER = ["| revision | message | upgrade | downgrade | re-upgrade | rewrote | size "
                  "| strongest lock per table (held) | rows |",
                  "| --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |"]


def _phased(result: Rehearsal) -> bool:
    """Whether the deploy has more than its pre-deploy revisions: post-deploy revisions
    pending, or background migrations that ran between the phases."""
    return bool(result.backfills) or any(p.get("phase") == "post-deploy" for p in result.pending)


def _pending_line(result: Rehearsal) -> str:
    if not result.pending:
        return f"- nothing pending: head is {label(result.head)}"
    post = sum(1 for p in result.pending if p.get("phase") == "post-deploy")
    order = ""
    if _phased(result):
        order = (f" ({len(result.pending) - post} pre-deploy, {post} post-deploy); in the "
                 "deploy's order: the pre-deploy revisions, the background migrations to "
                 "their end, the post-deploy revisions")
    return (f"- {len(result.pending)} pending revision(s), to {label(result.head)}{order}; "
            "each revision applied, rolled back, then applied again, one at a time through "
            "`env.py`")


def _backfill_rows(result: Rehearsal) -> list[str]:
    if not result.backfills:
        return ["No background migration was registered or left unfinished."]
    lines = ["| background migration | registered by | table | pass | rows | batches | size "
             "| state |", "| --- | --- | --- | --- | ---: | ---: | --- | --- |"]
    for entry in result.backfills:
        lines.append("| " + " | ".join(_cell(cell) for cell in (
            f"`{entry.name}`", f"`{entry.revision}`", entry.table, entry.phase,
            str(entry.rows), str(entry.batches), _backfill_size(entry),
            entry.state if entry.ok else f"**{entry.state}**: {entry.error or ''}")) + " |")
    times = ", ".join(f"{phase} {_seconds(seconds)}"
                      for phase, seconds in result.backfill_seconds.items())
    return [*lines, "", "Run to their end with the runner of `flask migrations backfill run` "
                        f"(batches of row locks only): {times}."]


def _backfill_size(entry: Backfill) -> str:
    if entry.bytes_before is None or entry.bytes_after is None:
        return "-"
    return f"{size_text(entry.bytes_before)} -> {size_text(entry.bytes_after)}"


def render_markdown(result: Rehearsal) -> str:
    """The report a reviewer reads before approving the deploy."""
    verdict = "passed" if result.ok else "FAILED"
    lines = [
        f"# Migration rehearsal: {verdict}",
        "",
        f"- source: {result.source}, at {label(result.start)}",
        f"- copied into scratch database `{result.scratch}` on {result.server} "
        f"(PostgreSQL {result.server_version or '?'}) in {_seconds(result.copy_seconds)}; "
        "dropped afterwards",
        _pending_line(result),
        f"- total {_seconds(result.seconds)}",
    ]
    if _phased(result):
        pre = [p for p in result.pending if p.get("phase") != "post-deploy"]
        post = [p for p in result.pending if p.get("phase") == "post-deploy"]
        lines += ["", "## Upgrade", "", "### 1. Pre-deploy revisions (each replica's start)",
                  ""]
        lines += [*UPGRADE_HEADER, *(_revision_row(result, p, "upgrade") for p in pre)] \
            if pre else ["None pending."]
        lines += ["", "### 2. Background migrations (`flask migrations backfill run`)", ""]
        lines += _backfill_rows(result)
        lines += ["", "### 3. Post-deploy revisions (`flask migrations post-deploy`)", ""]
        lines += [*UPGRADE_HEADER, *(_revision_row(result, p, "upgrade") for p in post)] \
            if post else ["None pending."]
    elif result.pending:
        lines += ["", "## Upgrade", "", *UPGRADE_HEADER]
        lines += [_revision_row(result, p, "upgrade") for p in result.pending]
    if result.pending:
        lines += ["", "## Downgrade", "",
                  "| revision | message | downgrade | rewrote | size "
                  "| strongest lock per table (held) | rows |",
                  "| --- | --- | ---: | --- | --- | --- | --- |"]
        lines += [_revision_row(result, p, "downgrade") for p in reversed(result.pending)]
    lines += _tables_section(result) + _checks_section(result) + _legend(result)
    return "\n".join(lines) + "\n"


def _tables_section(result: Rehearsal) -> list[str]:
    if not result.tables_start:
        return []
    head = result.tables_head
    lines = ["", "## Tables", "", "| table | rows before | rows at head | size before "
             "| size at head |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in sorted(set(result.tables_start) | set(head)):
        a, b = result.tables_start.get(name), head.get(name)
        lines.append(f"| {name} | {a.rows if a else '-'} | {b.rows if b else '-'} | "
                     f"{size_text(a.bytes) if a else '-'} | {size_text(b.bytes) if b else '-'} |")
    return lines


def _checks_section(result: Rehearsal) -> list[str]:
    lines = ["", "## Checks", ""]
    for key, title in CHECKS.items():
        check = result.checks.get(key)
        if check is None:
            lines.append(f"- {title}: not run")
        else:
            mark = "ok" if check["ok"] else "**FAILED**"
            lines.append(f"- {title}: {mark} ({check['detail']})")
    if result.problems:
        lines += ["", "## Problems", ""] + [f"- {problem}" for problem in result.problems]
    return lines


def _legend(result: Rehearsal) -> list[str]:
    shown = [step for step in result.steps if step.phase != "re-upgrade"]
    modes = sorted({mode for step in shown for mode in step.locks.values()},
                   key=LOCK_MODES.index, reverse=True)
    if not modes:
        return []
    return ["", "Lock modes seen, strongest first:", ""] + \
        [f"- {mode}: {LOCK_BLOCKS[mode]}" for mode in modes]


def as_json(result: Rehearsal) -> dict[str, Any]:
    """The same facts for a machine: CI can gate on ``ok`` or on any step's numbers."""
    return {
        "ok": result.ok,
        "problems": result.problems,
        "source": result.source,
        "scratch_database": result.scratch,
        "server": result.server,
        "server_version": result.server_version,
        "copy_seconds": result.copy_seconds,
        "seconds": result.seconds,
        "start": result.start,
        "head": result.head,
        "pending": result.pending,
        "steps": [dataclasses.asdict(step) | {"ok": step.ok} for step in result.steps],
        "backfills": [dataclasses.asdict(entry) | {"ok": entry.ok}
                      for entry in result.backfills],
        "backfill_seconds": result.backfill_seconds,
        "tables_start": tables_json(result.tables_start),
        "tables_head": tables_json(result.tables_head),
        "checks": result.checks,
    }
