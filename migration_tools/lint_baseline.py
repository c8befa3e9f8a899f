"""The lint baseline: findings accepted in revisions that can never be rewritten.

An inherited history (revisions already applied to databases in the field) can hold
findings nobody may fix: rewriting the revision would not change what already ran, and a
``# squawk-ignore`` comment in it changes its checksum, so every database would refuse to
start until ``flask migrations accept-edits`` ran on each. The baseline keeps those
acceptances beside the history instead, in ``migrations/lint-baseline.txt``, one a line::

    <revision> <rule> <reason...>

``#`` comments and blank lines are allowed. One line accepts every finding of that rule in
that revision. A finding not in the file still fails (so new revisions are linted strictly),
and a line whose finding no longer occurs is *stale* and fails too, so the file never
accepts more than what is there. A revision that cannot be rendered offline is listed under
the rule name ``cannot-render-offline``.

``scripts/lint_migrations.sh --write-baseline "reason"`` writes every current finding into
the file: lines still true keep their reason (and comments stay), new findings get the
reason given, stale lines go. With no finding at all, no file is written (and an existing
one is removed): an empty baseline accepts nothing and only invites the next one.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from migration_tools.lint import Finding

BASELINE_FILE = "lint-baseline.txt"
LINE_SYNTAX = "<revision> <rule> <reason>"
UNRENDERABLE = "cannot-render-offline"
WRITE_COMMAND = 'scripts/lint_migrations.sh --write-baseline "<reason>"'
HEADER = (
    "# Lint findings accepted in revisions that cannot be rewritten (an inherited history).\n"
    f"# One a line: {LINE_SYNTAX}. A finding not listed here fails the lint, and so does a\n"
    "# line whose finding no longer occurs. Rewritten, keeping each line's reason, by:\n"
    f"#   {WRITE_COMMAND}\n"
)
_RULE_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

Key = tuple[str, str]


class BaselineError(RuntimeError):
    """The baseline cannot be read or written; the message is one line naming the file."""


@dataclass(frozen=True)
class Entry:
    """One accepted finding: a rule in a revision, why, and where the file says so."""

    revision: str
    rule: str
    reason: str
    line: int

    @property
    def key(self) -> Key:
        return (self.revision, self.rule)


@dataclass
class Baseline:
    """The file as read: its entries by (revision, rule), and its lines, for rewriting."""

    path: Path
    shown: str
    entries: dict[Key, Entry] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


@dataclass
class Judgement:
    """Findings split by the baseline: failures, accepted (with their entry), stale lines."""

    failures: list[Finding]
    accepted: list[tuple[Finding, Entry]]
    stale: list[Entry]


def finding_key(finding: Finding) -> Key:
    """(revision, rule) as the baseline names a finding."""
    return (finding.revision.ident, finding.rule or UNRENDERABLE)


def read_baseline(migrations: Path, root: Path) -> Baseline:
    """The baseline of a migrations folder; an absent file accepts nothing."""
    path = migrations / BASELINE_FILE
    shown = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    baseline = Baseline(path, shown)
    if not path.exists():
        return baseline
    try:
        baseline.lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{shown}: cannot read: {exc}") from None
    for number, text in enumerate(baseline.lines, start=1):
        entry = parse_line(text, number, shown)
        if entry is None:
            continue
        if entry.key in baseline.entries:
            first = baseline.entries[entry.key].line
            raise BaselineError(f"{shown}:{number}: {entry.revision} {entry.rule} is already "
                                f"accepted on line {first}; keep one line per rule and revision")
        baseline.entries[entry.key] = entry
    return baseline


def parse_line(text: str, number: int, shown: str) -> Entry | None:
    """One line of the file: an entry, or None for a comment or a blank line."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    words = stripped.split(maxsplit=2)
    if len(words) < 3 or not re.search(r"\w", words[2]) or not _RULE_NAME.fullmatch(words[1]):
        raise BaselineError(f"{shown}:{number}: expected {LINE_SYNTAX!r} (the reason is "
                            f"required), got {stripped[:80]!r}")
    return Entry(words[0], words[1], words[2], number)


def judge(baseline: Baseline, findings: Sequence[Finding],
          linted: set[str] | None) -> Judgement:
    """Split the findings by the baseline. Entries are judged for the revisions linted
    (``linted``), or all of them (None: the whole history was linted, so a line naming a
    revision that is gone is stale too)."""
    judgement = Judgement([], [], [])
    seen: set[Key] = set()
    for finding in findings:
        entry = baseline.entries.get(finding_key(finding))
        if entry is None:
            judgement.failures.append(finding)
        else:
            judgement.accepted.append((finding, entry))
            seen.add(entry.key)
    judgement.stale = [entry for key, entry in baseline.entries.items()
                       if key not in seen and (linted is None or entry.revision in linted)]
    return judgement


def accepted_lines(baseline: Baseline, judgement: Judgement, root: Path) -> list[str]:
    """Each accepted finding, with the line of the file that accepts it and its reason."""
    return [f"accepted: {finding.render(root)} ({baseline.shown}:{entry.line}: "
            f"{entry.reason})" for finding, entry in judgement.accepted]


def stale_lines(baseline: Baseline, judgement: Judgement) -> list[str]:
    """Each line of the file whose finding no longer occurs: a failure of its own."""
    return [f"{baseline.shown}:{entry.line}: stale: {entry.revision} {entry.rule} no longer "
            f"occurs; delete the line, or rewrite the file with {WRITE_COMMAND}"
            for entry in judgement.stale]


def report_lines(baseline: Baseline, judgement: Judgement, root: Path) -> list[str]:
    """The lint's report: what the baseline accepts first, then what fails (the findings
    it does not list, then its stale lines), nearest the summary."""
    return (accepted_lines(baseline, judgement, root)
            + [finding.render(root) for finding in judgement.failures]
            + stale_lines(baseline, judgement))


def summary_suffix(baseline: Baseline, judgement: Judgement) -> str:
    """The summary's words about the baseline; empty when it played no part."""
    parts = []
    if judgement.accepted:
        parts.append(f"{len(judgement.accepted)} accepted by {baseline.shown}")
    if judgement.stale:
        parts.append(f"{len(judgement.stale)} stale baseline line(s)")
    return "".join(f", {part}" for part in parts)


def write_baseline(baseline: Baseline, findings: Iterable[Finding], reason: str) -> str:
    """Make the file list exactly these findings; return one line saying what changed."""
    reason = " ".join(reason.split())
    if not re.search(r"\w", reason):
        raise BaselineError("--write-baseline needs a reason: why these findings are "
                            "accepted (it is written on each new line)")
    wanted = list(dict.fromkeys(finding_key(f) for f in findings))
    if not wanted:
        if baseline.path.exists():
            baseline.path.unlink()
            return f"{baseline.shown}: removed, no finding is left to accept"
        return f"no findings: nothing to accept, {baseline.shown} not written"
    keep = set(wanted)
    lines: list[str] = []
    for number, text in enumerate(baseline.lines, start=1):
        entry = parse_line(text, number, baseline.shown)
        if entry is None or entry.key in keep:
            lines.append(text)
    new = [key for key in wanted if key not in baseline.entries]
    lines += [f"{revision} {rule} {reason}" for revision, rule in new]
    kept = len(wanted) - len(new)
    dropped = len(baseline.entries) - kept
    text = "\n".join(lines) + "\n"
    _replace(baseline.path, text if baseline.lines else HEADER + text)
    return (f"{baseline.shown}: {len(wanted)} accepted finding(s): {len(new)} new, {kept} kept, "
            f"{dropped} stale removed")


def _replace(path: Path, text: str) -> None:
    """Write the whole file or nothing: a half-written baseline would fail every lint."""
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)  # a committed file, readable like the revisions beside it
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise BaselineError(f"{path}: cannot write: {exc}") from None
