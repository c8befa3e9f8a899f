"""Pre-deploy and post-deploy revisions, and how they share one Alembic history.

A contract step (``SET NOT NULL`` once a backfill is done, dropping what the previous release
still reads) must not run while the previous release may still be serving, nor before the
background migration it relies on has finished. GitLab keeps such steps apart as
post-deployment migrations; here they are Alembic revisions on a branch of their own:

- the **main line** holds every revision not labelled ``post``: the pre-deploy revisions.
  The entrypoint and ``flask db upgrade`` apply them, and only them;
- the **post-deploy branch** starts at a root of its own (``down_revision = None``,
  ``branch_labels = ("post",)``); each later post-deploy revision sits on the previous one, and
  every one ``depends_on`` the main-line revision whose change it completes. ``flask
  migrations post-deploy`` applies them, once the release is out.

Why a root of its own: Alembic propagates a branch label along ``down_revision`` both ways,
so a ``post`` branch forking from the main line would label the main line's shared
ancestors ``post`` too. ``depends_on`` orders without propagating the label.

The history therefore has at most two heads, one per phase, and the next release's
pre-deploy revisions go on the main line whatever the post-deploy branch's state: a contract
waiting for its backfill never holds back an expand. A pre-deploy revision may itself
``depends_on`` a post-deploy one (an expand that needs the previous contract done); the start
then refuses until ``flask migrations post-deploy`` has applied it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from alembic.script import Script, ScriptDirectory

from backend.migrate import LifecycleError, checksums

POST = "post"  # the branch label of post-deploy revisions


def is_post(script: Script) -> bool:
    return POST in script.branch_labels


@dataclass(frozen=True)
class Phases:
    """The history's heads, split by phase, and which revisions are post-deploy."""

    pre_heads: tuple[str, ...]
    post_heads: tuple[str, ...]
    post: frozenset[str]

    @property
    def has_post(self) -> bool:
        return bool(self.post)

    def problem(self) -> str | None:
        """Why no command can pick a head: several heads in one phase (a branch to merge)."""
        if not self.post and len(self.pre_heads) > 1:
            return several_heads_reason(list(self.pre_heads))
        for name, heads in (("pre-deploy", self.pre_heads), ("post-deploy", self.post_heads)):
            if len(heads) > 1:
                return several_heads_reason(list(heads), name)
        return None


def read_phases(scripts: ScriptDirectory) -> Phases:
    post = frozenset(s.revision for s in scripts.walk_revisions() if is_post(s))
    heads = sorted(scripts.get_heads())
    return Phases(pre_heads=tuple(h for h in heads if h not in post),
                  post_heads=tuple(h for h in heads if h in post), post=post)


def several_heads_reason(heads: list[str], phase: str | None = None) -> str:
    """Without a post-deploy branch every head is one to merge (``heads``); with one, only
    the phase's own heads are, named one by one."""
    where = f"the {phase} revisions have" if phase else "the revision history has"
    what = " ".join(heads) if phase else "heads"
    return (f"{where} {len(heads)} heads ({', '.join(heads)}): merge them with "
            f'`flask db merge {what} -m "merge heads"` (or scripts/resolve_conflict.sh)')


def ancestors(scripts: ScriptDirectory, revisions: Iterable[str]) -> set[str]:
    """Every revision the given ones need first, themselves included: along
    ``down_revision`` and ``depends_on`` alike."""
    seen: set[str] = set()
    todo = list(revisions)
    while todo:
        rev = todo.pop()
        if rev in seen:
            continue
        seen.add(rev)
        script = scripts.get_revision(rev)
        todo.extend(_needs(scripts, script))
    return seen


def _needs(scripts: ScriptDirectory, script: Script) -> list[str]:
    down = script.down_revision or ()
    deps = script.dependencies or ()
    names = [*((down,) if isinstance(down, str) else down),
             *((deps,) if isinstance(deps, str) else deps)]
    # depends_on may name a branch label or a short id: resolve it to the revision
    return [scripts.get_revision(name).revision for name in names]


_RELATIVE_DOWN = re.compile(r"^-(\d+)$")


def destination(scripts: ScriptDirectory, phases: Phases, command: str, typed: str | None,
                current: list[str], last_applied: Callable[[list[str]], str | None]
                ) -> str | None:
    """Where a command typed for a one-line history goes once a post-deploy branch exists;
    None to leave it as typed.

    - ``upgrade head`` (the entrypoint, ``flask db upgrade``) and ``stamp head``: the
      pre-deploy head. Post-deploy revisions are never applied on the way, so when the
      pre-deploy head needs one that is not applied, the upgrade is refused.
    - ``downgrade -N`` (``flask db downgrade``) with both phases applied: N steps back on the
      phase of the revision applied last, as "undo what I just did" means on one line.
    ``heads``, ``post@head`` or a revision id are explicit and go as typed.
    """
    if not phases.has_post or phases.problem() or len(phases.pre_heads) != 1:
        return None
    if command in ("upgrade", "do_stamp") and typed == "head":
        [pre_head] = phases.pre_heads
        if command == "upgrade":
            applied = set(checksums.applied_chain(scripts, current))
            needed = sorted((ancestors(scripts, [pre_head]) & phases.post) - applied)
            if needed:
                raise LifecycleError(
                    f"the pre-deploy revisions need post-deploy revision(s) {', '.join(needed)} "
                    "first: run `flask migrations post-deploy` with the release that brought "
                    "them, then deploy this one (a start never applies post-deploy revisions)")
        return pre_head
    steps = _RELATIVE_DOWN.match(typed or "")
    if command == "downgrade" and steps and _holds_both(phases, current):
        last = last_applied(current)
        if last in phases.post:
            return f"{POST}@-{steps.group(1)}"
        if last is not None:
            return f"{last}-{steps.group(1)}"
    return None


def _holds_both(phases: Phases, current: list[str]) -> bool:
    return any(rev in phases.post for rev in current) and \
        any(rev not in phases.post for rev in current)
