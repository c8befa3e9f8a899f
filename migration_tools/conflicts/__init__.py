"""``scripts/resolve_conflict.sh``: make a history with two heads linear (or merged) again.

Two branches that each added a revision on the same parent leave two heads, and with two
heads the entrypoint, ``/readyz`` and ``create_migration.sh`` all refuse. The team guide
offers two fixes, and this module runs either one end to end, through Flask-Migrate's
config and our ``migrations/env.py`` like every other migration path:

``merge``
    ``flask db merge heads`` writes a revision whose parents are both heads, then
    ``flask db upgrade`` applies whatever the database lacks. Nothing is rolled back. The
    merge needs only the files: a database that does not answer, or that another branch
    left at a revision these files lack (after ``git switch``), is not upgraded, and a
    note says why and what to do (``migration_tools/branches.py``).

``rebase``
    The newer head (by its ``Create Date``, then its file name; ``--keep`` picks the other
    way) is moved on top of the other one: the database first rolls it back if it had it
    (its ``downgrade()`` runs, so rows already in the tables stay), then its file is
    written again with ``down_revision`` pointing at the other head, then ``flask db
    upgrade`` applies both in the new order. Re-parenting the file instead of
    autogenerating a new one keeps the hand-written body (backfills, concurrent indexes).

With a post-deploy branch (backend/migrate/phases.py) the history has one head per phase,
and that is no conflict. Only a phase with several heads is resolved, and only its heads:
a pre-deploy head is never merged with the post-deploy one. The merge names those heads by
id (``flask db merge <a> <b>``: ``heads`` would take the other phase's too); the upgrade
after resolving the post-deploy phase brings a database that already has post-deploy
revisions to that phase's new head as well, and leaves the others to ``flask migrations
post-deploy``. A rebase is refused when another revision depends on the branch it would
move (a post-deploy revision completing it, typically): rolling that branch back would
take the dependent revision with it.

Both change the schema of the database they talk to, and ``rebase`` runs a downgrade, so
a database that is not on this machine is refused unless ``--force`` says otherwise:
resolving a conflict is a development-time step, production only ever sees the result.
Every refusal happens before anything is touched.
"""

from __future__ import annotations

from backend.migrate import LifecycleError

PROG = "resolve_conflict"
SCRIPT = "scripts/resolve_conflict.sh"
DEFAULT_MERGE_MESSAGE = "merge heads"
LOCAL_NAMES = ("localhost",)


class ResolveFailed(LifecycleError):
    """A step failed after something was changed: the message says where things stand."""
