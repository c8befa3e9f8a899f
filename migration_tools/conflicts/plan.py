"""The heads to make one, and the plan for doing it.

With a post-deploy branch (backend/migrate/phases.py) the history normally has two heads,
one per phase: those are not a conflict, and a pre-deploy head is never merged with the
post-deploy one (the merge would tie the main line to the contract steps, and the start
could no longer apply one without the other). Only a phase with several heads has a
conflict, and only its heads are resolved.
"""


from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic.script import Script, ScriptDirectory
from alembic.util import to_tuple

from backend.migrate import LifecycleError
from backend.migrate.phases import read_phases
from migration_tools.conflicts import PROG, SCRIPT

# --------------------------------------------------------------------------- the history

CREATE_DATE = re.compile(r"^Create Date:[ \t]*(?P<date>.+?)[ \t]*$", re.M)
FILE_STAMP = re.compile(r"^\d{8}_\d{4}_")


def created(script: Script) -> tuple[datetime, str]:
    """How old a revision is: its ``Create Date`` header, then its file name.

    The header is what Alembic wrote when the file was generated; the file name (which
    starts with the creation time here) breaks ties and covers a file without a header.
    """
    path = Path(script.path)
    when = datetime.min.replace(tzinfo=UTC)
    match = CREATE_DATE.search(path.read_text())
    if match:
        try:
            parsed = datetime.fromisoformat(match["date"])
            when = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return when, path.name


def head_scripts(scripts: ScriptDirectory) -> list[Script]:
    """The heads, oldest first, so "the newer one" is always the last."""
    return sorted((scripts.get_revision(rev) for rev in scripts.get_heads()), key=created)


@dataclass(frozen=True)
class Conflict:
    """The heads to make one, oldest first, and the phase they are in: None on a history
    without a post-deploy branch, where every head counts, as before the phases existed."""

    heads: list[Script]
    phase: str | None = None
    others: tuple[str, ...] = ()  # the other phase's heads, which stay as they are

    @property
    def exists(self) -> bool:
        return len(self.heads) > 1

    @property
    def post(self) -> bool:
        return self.phase == "post-deploy"

    @property
    def whose(self) -> str:
        """Whose heads: "the revision history" or "the pre-deploy revisions"."""
        return f"the {self.phase} revisions" if self.phase else "the revision history"

    @property
    def merge_target(self) -> str | list[str]:
        """What ``flask db merge`` takes: ``heads``, or the phase's heads by id (``heads``
        would merge a pre-deploy head with the post-deploy one)."""
        return [head.revision for head in self.heads] if self.phase else "heads"

    def heads_now(self) -> str:
        """The heads, once the conflict is resolved (or when there is none)."""
        if self.phase is None:
            return (f"one head ({self.heads[0].revision})" if self.heads else "no revision")
        return (f"one head per phase (pre-deploy {', '.join(self._pre)}; post-deploy "
                f"{', '.join(self._post)})")

    def nothing_to_resolve(self) -> str:
        """Why there is nothing to do, in one line."""
        normal = ", as a post-deploy branch beside the main line makes it" if self.phase \
            else ""
        return f"the revision history has {self.heads_now()}{normal}: nothing to resolve"

    @property
    def _pre(self) -> tuple[str, ...]:
        return self.others if self.post else tuple(h.revision for h in self.heads)

    @property
    def _post(self) -> tuple[str, ...]:
        return tuple(h.revision for h in self.heads) if self.post else self.others


def find_conflict(scripts: ScriptDirectory) -> Conflict:
    """The heads to resolve: every head without a post-deploy branch; with one, those of the
    phase with several (the pre-deploy phase first when both have; the post-deploy one is
    then the next run's)."""
    history = read_phases(scripts)
    if not history.has_post:
        return Conflict(head_scripts(scripts))
    phases = (("pre-deploy", history.pre_heads, history.post_heads),
              ("post-deploy", history.post_heads, history.pre_heads))
    phase, heads, others = next((p for p in phases if len(p[1]) > 1), phases[0])
    ordered = sorted((scripts.get_revision(rev) for rev in heads), key=created)
    return Conflict(ordered, phase, tuple(others))


def ancestors(scripts: ScriptDirectory, revision: str) -> set[str]:
    """``revision`` and every revision below it, through every parent of a merge."""
    return {script.revision for script in scripts.walk_revisions("base", revision)}


def common_ancestor(scripts: ScriptDirectory, first: str, second: str) -> str:
    """The revision the two heads fork from: the nearest one both descend from."""
    common = ancestors(scripts, first) & ancestors(scripts, second)
    below = set().union(*(ancestors(scripts, rev) - {rev} for rev in common)) if common else set()
    nearest = sorted(common - below)
    if len(nearest) != 1:
        found = ", ".join(nearest) or "none"
        raise LifecycleError(f"{first} and {second} do not fork from one revision (common "
                             f"ancestors: {found}): use `{SCRIPT} merge` instead")
    return nearest[0]


def relative(path: Path | str) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


@dataclass
class RebasePlan:
    """What ``rebase`` will do, worked out from the files before anything is touched."""

    keep: Script
    move: Script
    ancestor: str
    branch: list[Script]  # the moved branch, root (child of the ancestor) first

    @property
    def root(self) -> Script:
        return self.branch[0]


_DOWN_REVISION = r"^(down_revision[ \t]*(?::[^=\n]*)?=[ \t]*)(['\"]){rev}\2([ \t]*)$"
_REVISES = r"^(Revises:[ \t]*){rev}([ \t]*)$"


def reparent_source(source: str, old_parent: str, new_parent: str) -> str:
    """The revision file's text with its parent changed in ``down_revision`` and ``Revises:``.

    Refuses (rather than guessing) when the file does not say ``down_revision = '<old>'``
    exactly once, e.g. a hand-built tuple: rewriting it is then a job for a person.
    """
    pattern = re.compile(_DOWN_REVISION.format(rev=re.escape(old_parent)), re.M)
    text, count = pattern.subn(lambda m: f"{m[1]}{m[2]}{new_parent}{m[2]}{m[3]}", source)
    if count != 1:
        raise LifecycleError(f"cannot re-parent: the file does not assign "
                             f"down_revision = '{old_parent}' exactly once")
    revises = re.compile(_REVISES.format(rev=re.escape(old_parent)), re.M)
    return revises.sub(lambda m: f"{m[1]}{new_parent}{m[2]}", text, count=1)


def plan_rebase(scripts: ScriptDirectory, keep: str | None,
                conflict: Conflict | None = None) -> RebasePlan:
    """Choose the head to move (one of the conflict's, by default every head) and check
    that re-parenting it is well defined."""
    conflict = conflict or Conflict(head_scripts(scripts))
    heads = conflict.heads
    if len(heads) != 2:
        raise LifecycleError(f"rebase moves one head onto the other, and {conflict.whose} "
                             f"have {len(heads)} heads ({', '.join(h.revision for h in heads)}): "
                             f"use `{SCRIPT} merge` instead")
    if keep:
        chosen = [h for h in heads if h.revision.startswith(keep.strip())]
        if len(chosen) != 1:
            raise LifecycleError(f"--keep {keep}: not one of the heads "
                                 f"({', '.join(h.revision for h in heads)})")
        kept = chosen[0]
        moved = next(h for h in heads if h is not kept)
    else:
        kept, moved = heads
    ancestor = common_ancestor(scripts, kept.revision, moved.revision)

    own = ancestors(scripts, moved.revision) - ancestors(scripts, kept.revision)
    branch = [s for s in reversed(list(scripts.walk_revisions("base", moved.revision)))
              if s.revision in own]
    allowed = {ancestor} | own
    roots = [s for s in branch if ancestor in to_tuple(s.down_revision, default=())]
    parents = [to_tuple(s.down_revision, default=()) for s in branch]
    if (len(roots) != 1 or any(len(p) != 1 for p in parents)
            or any(not set(p) <= allowed for p in parents)):
        raise LifecycleError(f"the branch of {moved.revision} is not a line of revisions on "
                             f"{ancestor}: use `{SCRIPT} merge` instead")
    # Any revision that depends on the moved branch: the kept one's, or a post-deploy
    # revision completing it (rolling the branch back would roll that back too, and the
    # upgrade after would not bring it back).
    waiting = [s.revision for s in scripts.walk_revisions()
               if s.revision not in own and own & set(to_tuple(s.dependencies, default=()))]
    if waiting:
        raise LifecycleError(f"{', '.join(waiting)} depends on the branch of {moved.revision}, "
                             f"which cannot then move after it: use `{SCRIPT} merge` instead")
    reparent_source(Path(roots[0].path).read_text(), ancestor, kept.revision)  # checks it
    return RebasePlan(keep=kept, move=moved, ancestor=ancestor, branch=branch)


def overview(scripts: ScriptDirectory) -> str:
    """The heads and both ways out, for a run without arguments."""
    conflict = find_conflict(scripts)
    heads = conflict.heads
    lines = []
    if not conflict.exists:
        lines.append(f"{PROG}: {conflict.nothing_to_resolve()}")
    else:
        verb = "have" if conflict.phase else "has"
        lines.append(f"{PROG}: {conflict.whose} {verb} {len(heads)} heads (oldest first):")
        for head in heads:
            lines.append(f"  {head.revision}  {head.doc}  ({relative(head.path)})")
        if conflict.others:
            other = "post-deploy" if conflict.phase == "pre-deploy" else "pre-deploy"
            lines.append(f"  (the {other} head(s) {', '.join(conflict.others)}: another "
                         "phase's, left alone)")
    by_id = conflict.phase is not None and conflict.exists
    merged = "those heads" if by_id else "all heads"
    merge_words = " ".join(h.revision for h in heads) if by_id else "heads"
    older = heads[0].revision if len(heads) == 2 else "the older head"
    newer = heads[-1].revision if len(heads) == 2 else "the newer head"
    lines += [
        "Two ways to get one head again:",
        f"  {SCRIPT} merge [-m MESSAGE]",
        f"      write a merge revision whose parents are {merged} (flask db merge "
        f"{merge_words}),",
        "      then bring the database to it (flask db upgrade)",
        f"  {SCRIPT} rebase [--keep REV]",
        f"      roll {newer} back if the database has it (its downgrade runs), re-parent",
        f"      its file onto {older}, then flask db upgrade; --keep REV keeps REV in place",
        "      and moves the other head instead. Values stored only in what the rolled-back",
        "      revision added are lost with its downgrade; merge rolls nothing back.",
        "Both work on DATABASE_URL (or the embedded development database when it is unset);",
        "add --force to either one to work on a database that is not on this machine.",
    ]
    return "\n".join(lines)
