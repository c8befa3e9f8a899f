"""A development database at a revision this checkout lacks: where that revision lives, and
the ways back.

Switching branches is daily life: a revision written and applied on one branch stays in the
development database after ``git switch``, and the other branch's code has no file for it.
Production refuses such a database in one line (``backend/migrate/revisions.unknown_reason``)
and keeps doing so; a developer gets more, because in a checkout git knows the rest:

1. which branch (or commit) holds that revision's file, and the ``flask db downgrade`` to
   run there, down to the newest revision both checkouts share; then back here, the usual
   upgrade applies this checkout's revisions;
2. or one command that backs the embedded development database up and rebuilds it at this
   checkout's head (``scripts/reset_dev_database.sh``), for when its rows do not matter.

Everything here only reads: git's objects (``git grep`` on a ref's tree, ``git log``), never
the working tree or the index. Without git, or a commit that has the file, the message
says so and offers the reset.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from backend import MIGRATIONS_DIR
from backend.config import parse_database_url
from backend.migrate.revisions import ahead_of_code, find_revision, read_state
from migration_tools.command_line import on_caller_path

RESET_SCRIPT = "scripts/reset_dev_database.sh"
GIT_TIMEOUT = 20
_ASSIGNMENT = re.compile(r"^(down_revision|revision)[ \t]*(?::[^=\n]*)?=[ \t]*(.*)$")
_QUOTED = re.compile(r"['\"]([\w.-]+)['\"]")


def flask_command() -> str:
    """How to run ``flask`` from where the user stands: bare when it is on their PATH (an
    active venv, a container), else the project venv's own, which works without activating
    it. The scripts pass the caller's PATH on as ``CALLER_PATH`` (scripts/_common.sh)."""
    if on_caller_path("flask"):
        return "flask"
    venv_flask = Path(sys.executable).parent / "flask"
    try:
        return str(venv_flask.relative_to(Path.cwd()))
    except ValueError:
        return str(venv_flask)


# --------------------------------------------------------------------------- git


def _git(root: Path, *args: str) -> str | None:
    """A read-only git command's stdout, or None (no git, not a repository, no match)."""
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


@dataclass
class Holder:
    """A ref (branch, or bare commit) whose tree has the revision's file."""

    ref: str  # what `git switch` takes
    commit: str  # its commit, abbreviated
    path: str  # the file, from the repository's top level
    local_branch: bool  # a branch of this repository (else a remote one, or a commit)

    @property
    def switch(self) -> str:
        return f"git switch {self.ref}" if self.local_branch else f"git switch --detach {self.ref}"


@dataclass
class Whereabouts:
    """What git knows about the revisions a database has and this checkout lacks."""

    unknown: list[str]
    holder: Holder | None = None
    messages: dict[str, str] = field(default_factory=dict)
    # The revision to downgrade to where the file is: the newest one this checkout has too
    # ("base" when they share none); None when the history there does not say one.
    target: str | None = None
    back: str | None = None  # the `git switch` that returns here


def _revision_pattern(revision: str) -> str:
    """``revision = 'abc'`` (or annotated, or double quoted) as a POSIX regular expression."""
    return (f"^revision[[:space:]]*(:[^=]*)?=[[:space:]]*['\"]{re.escape(revision)}['\"]")


def _versions_path(root: Path) -> str | None:
    top = _git(root, "rev-parse", "--show-toplevel")
    if not top:
        return None
    try:
        return (root / "migrations" / "versions").resolve().relative_to(
            Path(top.strip()).resolve()).as_posix()
    except ValueError:
        return None


def _current_branch(root: Path) -> str | None:
    name = _git(root, "symbolic-ref", "--short", "-q", "HEAD")
    return name.strip() if name else None


def _refs(root: Path) -> list[tuple[str, bool]]:
    """Local branches (newest commit first), then remote-tracking ones: (name, is_local)."""
    found: list[tuple[str, bool]] = []
    for namespace, local in (("refs/heads", True), ("refs/remotes", False)):
        listing = _git(root, "for-each-ref", "--sort=-committerdate",
                       "--format=%(refname:short)%09%(symref)", namespace) or ""
        for line in listing.splitlines():
            name, _, symref = line.partition("\t")
            if name and not symref:  # origin/HEAD only points at another remote branch
                found.append((name, local))
    return found


def _holder(root: Path, versions: str, revision: str) -> Holder | None:
    """The branch whose tree holds the revision's file; else the newest commit that does."""
    pattern = _revision_pattern(revision)
    here = _current_branch(root)
    for ref, local in _refs(root):
        if ref == here:
            continue
        out = _git(root, "grep", "-l", "-E", "-e", pattern, ref, "--", versions)
        if out:
            path = out.splitlines()[0].split(":", 1)[1]
            commit = (_git(root, "rev-parse", "--short", ref) or "").strip()
            return Holder(ref=ref, commit=commit, path=path, local_branch=local)
    # No branch has it now (deleted, rebased away): a commit that added it still may.
    out = _git(root, "log", "--all", "--reflog", "-n1", "--format=%h", "--diff-filter=AM",
               "-E", f"-G{pattern}", "--", versions)
    commit = (out or "").strip()
    if not commit:
        return None
    found = _git(root, "grep", "-l", "-E", "-e", pattern, commit, "--", versions)
    if not found:
        return None
    return Holder(ref=commit, commit=commit, path=found.splitlines()[0].split(":", 1)[1],
                  local_branch=False)


def _history_at(root: Path, ref: str, versions: str) -> dict[str, tuple[str, ...]]:
    """revision -> parents, for every revision file in ``ref``'s tree (read, not imported)."""
    out = _git(root, "grep", "-E", "-e", "^(down_)?revision[[:space:]]*(:[^=]*)?=", ref,
               "--", versions) or ""
    by_file: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        _, path, text = line.split(":", 2)
        match = _ASSIGNMENT.match(text)
        if match:
            by_file.setdefault(path, {})[match[1]] = match[2]
    graph: dict[str, tuple[str, ...]] = {}
    for assignments in by_file.values():
        revision = _QUOTED.findall(assignments.get("revision", ""))
        if revision:
            graph[revision[0]] = tuple(_QUOTED.findall(assignments.get("down_revision", "")))
    return graph


def _message(root: Path, ref: str, path: str) -> str:
    """The first line of the revision's docstring: its message."""
    source = _git(root, "show", f"{ref}:{path}")
    try:
        doc = ast.get_docstring(ast.parse(source or "")) or ""
    except SyntaxError:
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def shared_target(graph: dict[str, tuple[str, ...]], unknown: Iterable[str],
                  known: set[str]) -> str | None:
    """The revision to downgrade to there: going down from each unknown revision, the first
    ones this checkout also has. One of them, or "base" when no path meets one; None when
    the paths meet several (a merge across branches: no single target says it)."""
    met: set[str] = set()
    reached_base = False
    seen: set[str] = set()
    todo = list(unknown)
    while todo:
        revision = todo.pop()
        if revision in seen:
            continue
        seen.add(revision)
        if revision in known:
            met.add(revision)
            continue
        if revision not in graph:
            return None  # a file missing there: the history does not say
        parents = graph[revision]
        if not parents:
            reached_base = True
        todo.extend(parents)
    if len(met) == 1 and not reached_base:
        return met.pop()
    if not met:
        return "base"
    return None


def whereabouts(scripts: ScriptDirectory, unknown: list[str],
                root: Path = MIGRATIONS_DIR.parent) -> Whereabouts:
    """Ask git where the unknown revisions' files are, and what to downgrade to there."""
    found = Whereabouts(unknown=list(unknown))
    versions = _versions_path(root)
    if versions is None:
        return found
    for revision in unknown:
        found.holder = _holder(root, versions, revision)
        if found.holder is not None:
            break
    if found.holder is None:
        return found
    ref = found.holder.ref
    graph = _history_at(root, ref, versions)
    known = {script.revision for script in scripts.walk_revisions()}
    found.target = shared_target(graph, unknown, known)
    for revision in unknown:
        path = _git(root, "grep", "-l", "-E", "-e", _revision_pattern(revision), ref, "--",
                    versions)
        if path:
            found.messages[revision] = _message(root, ref, path.splitlines()[0].split(":", 1)[1])
    branch = _current_branch(root)
    if branch:
        found.back = f"git switch {branch}"
    else:
        head = (_git(root, "rev-parse", "--short", "HEAD") or "").strip()
        found.back = f"git switch --detach {head}" if head else None
    return found


# --------------------------------------------------------------------------- the message


def _named(revisions: list[str], messages: dict[str, str]) -> str:
    return ", ".join(f"{rev} ({messages[rev]})" if messages.get(rev) else rev
                     for rev in revisions)


def ways_out(scripts: ScriptDirectory, unknown: list[str], embedded: bool,
             root: Path = MIGRATIONS_DIR.parent) -> str:
    """The refusal for a development database at revisions this checkout lacks, with every
    way out as a command that works as printed. Several lines: a developer reads it, not a
    log collector (production's refusal stays the one line of ``unknown_reason``)."""
    found = whereabouts(scripts, unknown, root)
    which = "the embedded development database" if embedded else "the database"
    lines = [f"{which} is at revision {_named(unknown, found.messages)}, which this "
             "checkout does not have: it was applied on another branch (or project)."]
    holder = found.holder
    ways: list[list[str]] = []
    if holder is not None:
        where = (f"branch {holder.ref}" if holder.local_branch or holder.ref != holder.commit
                 else f"commit {holder.commit} (no branch has it now)")
        lines.append(f"Its file is on {where}: {holder.path}"
                     + (f" (commit {holder.commit})" if holder.ref != holder.commit else ""))
        if found.target is not None and found.back is not None:
            env = "" if embedded else " (with the same DATABASE_URL)"
            ways.append([f"roll it back where its file is{env}, then come back "
                         "(this checkout's revisions apply on the next start or upgrade):",
                         f"    {holder.switch}",
                         f"    {flask_command()} db downgrade {found.target}",
                         f"    {found.back}"])
    else:
        lines.append("No branch or commit of this repository has its file (another project, "
                     "or a branch that is gone): roll it back from the checkout that has it, "
                     f"with `{flask_command()} db downgrade`.")
    if embedded:
        ways.append(["or back the database up and rebuild it at this checkout's head "
                     "(its rows go; the backup keeps them):",
                     f"    {RESET_SCRIPT}"])
    if ways:
        lines.append("Ways out:" if len(ways) > 1 else "Way out:")
        for way in ways:
            lines.append(f"  {way[0]}")
            lines.extend(way[1:])
    return "\n".join(lines)


def unknown_revisions(url: URL | str, scripts: ScriptDirectory | None = None) -> list[str]:
    """The database's revisions this checkout lacks, when they make it refused: not known
    here, and not a newer release on top of this checkout's head (that one is served).
    Empty when there are none, or when the database cannot be read (whoever connects next
    says why)."""
    scripts = scripts or ScriptDirectory(str(MIGRATIONS_DIR))
    engine = create_engine(parse_database_url(url) if isinstance(url, str) else url,
                           connect_args={"connect_timeout": 5, "application_name": "branch_check"})
    try:
        with engine.connect() as connection:
            current, recorded = read_state(connection)
    except Exception:  # best effort: whoever connects next says why
        return []
    finally:
        engine.dispose()
    unknown = [rev for rev in current if find_revision(scripts, rev) is None]
    if not unknown or ahead_of_code(scripts, current, recorded):
        return []
    return unknown

