"""The one place that reads Alembic's private state: what a running command is about to do.

Alembic has no public preview of the steps ``run_migrations`` will take, nor of which
command (upgrade, downgrade, stamp) handed it its plan. Both live on the migration context
as ``_migrations_fn``: the pure function ``alembic.command`` builds, called with the current
heads. Reading it here, and nowhere else, keeps an Alembic upgrade that renames or reshapes
it to one file; tests/migrate/test_alembic_plan.py fails loudly if it does.
"""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext


def planned_steps(ctx: MigrationContext) -> list:
    """The steps Alembic is about to run, computed the way ``run_migrations`` does."""
    return list(_plan(ctx)(ctx.get_current_heads(), ctx))


def command_name(ctx: MigrationContext) -> str:
    """The Alembic command running: ``upgrade``, ``downgrade`` or ``stamp``, the name of
    the inner function each gives the context."""
    return _plan(ctx).__name__


def _plan(ctx: MigrationContext):
    plan = getattr(ctx, "_migrations_fn", None)
    if not callable(plan):
        raise RuntimeError("this Alembic version no longer keeps the plan in "
                           "MigrationContext._migrations_fn: backend/migrate/alembic_plan.py "
                           "needs updating")
    return plan
