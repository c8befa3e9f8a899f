"""The one place that reads Alembic's private state: what a running command is about to do.

Alembic has no public preview of the steps ``run_migrations`` will take, nor of which
command (upgrade, downgrade, stamp) handed it its plan. Both live on the migration context
as ``_migrations_fn``: the pure function ``alembic.command`` builds, called with the current
heads. Reading it here, and nowhere else, keeps an Alembic upgrade that renames or reshapes
it to one file; tests/migrate/test_alembic_plan.py fails loudly if it does.
"""

from __future__ import annotations

from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext


def planned_steps(ctx: MigrationContext) -> list:
    """The steps Alembic is about to run, computed the way ``run_migrations`` does."""
    return list(_plan(ctx)(ctx.get_current_heads(), ctx))


def command_name(ctx: MigrationContext) -> str:
    """The Alembic command running: ``upgrade``, ``downgrade`` or ``stamp``, the name of
    the inner function each gives the context."""
    return _plan(ctx).__name__


def environment() -> EnvironmentContext:
    """The running command's environment (``alembic.context`` proxies only its methods)."""
    from alembic import context

    return context._proxy


def requested(env: EnvironmentContext) -> tuple[str, str | None]:
    """Before the context is configured: (the command, the destination as the user typed
    it, e.g. ``head`` or ``-1``; a stamp's first one), without resolving it: resolving
    ``head`` raises when the history has a post-deploy branch beside the main line."""
    destination = env.context_opts.get("destination_rev")
    if isinstance(destination, tuple):
        destination = destination[0] if len(destination) == 1 else None
    return _plan(env).__name__, destination


def retarget(env: EnvironmentContext, destination: str) -> None:
    """Send the running command to ``destination`` instead: the plan function
    ``alembic.command`` would have built for it, under the same name. Call it before
    ``context.configure``, which hands the plan to the migration context."""
    scripts, command = env.script, _plan(env).__name__

    def upgrade(rev, context):
        return scripts._upgrade_revs(destination, rev)

    def downgrade(rev, context):
        return scripts._downgrade_revs(destination, rev)

    def do_stamp(rev, context):
        return scripts._stamp_revs((destination,), rev)

    plans = {"upgrade": upgrade, "downgrade": downgrade, "do_stamp": do_stamp}
    env.context_opts["fn"] = plans[command]
    env.context_opts["destination_rev"] = (destination,) if command == "do_stamp" \
        else destination


def _plan(ctx: MigrationContext | EnvironmentContext):
    plan = (ctx.context_opts.get("fn") if isinstance(ctx, EnvironmentContext)
            else getattr(ctx, "_migrations_fn", None))
    if not callable(plan):
        raise RuntimeError("this Alembic version no longer keeps the plan in "
                           "MigrationContext._migrations_fn: backend/migrate/alembic_plan.py "
                           "needs updating")
    return plan
