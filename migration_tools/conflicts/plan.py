"""The history's two heads, and the plan for making them one."""


from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic.script import Script, ScriptDirectory
from alembic.util import to_tuple

from backend.migrate import LifecycleError
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


def plan_rebase(scripts: ScriptDirectory, keep: str | None) -> RebasePlan:
    """Choose the head to move and check that re-parenting it is well defined."""
    heads = head_scripts(scripts)
    if len(heads) != 2:
        raise LifecycleError(f"rebase moves one head onto the other, and this history has "
                             f"{len(heads)} heads ({', '.join(h.revision for h in heads)}): "
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
    waiting = [s.revision for s in scripts.walk_revisions("base", kept.revision)
               if own & set(to_tuple(s.dependencies, default=()))]
    if waiting:
        raise LifecycleError(f"{', '.join(waiting)} depends on the branch of {moved.revision}, "
                             f"which cannot then move after it: use `{SCRIPT} merge` instead")
    reparent_source(Path(roots[0].path).read_text(), ancestor, kept.revision)  # checks it
    return RebasePlan(keep=kept, move=moved, ancestor=ancestor, branch=branch)


def overview(scripts: ScriptDirectory) -> str:
    """The heads and both ways out, for a run without arguments."""
    heads = head_scripts(scripts)
    lines = []
    if len(heads) < 2:
        lines.append(f"{PROG}: the revision history has "
                     f"{f'one head ({heads[0].revision})' if heads else 'no revision'}: "
                     "nothing to resolve")
    else:
        lines.append(f"{PROG}: the revision history has {len(heads)} heads (oldest first):")
        for head in heads:
            lines.append(f"  {head.revision}  {head.doc}  ({relative(head.path)})")
    older = heads[0].revision if len(heads) == 2 else "the older head"
    newer = heads[-1].revision if len(heads) == 2 else "the newer head"
    lines += [
        "Two ways to get one head again:",
        f"  {SCRIPT} merge [-m MESSAGE]",
        "      write a merge revision whose parents are all heads (flask db merge heads),",
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
