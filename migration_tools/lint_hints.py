"""Where a squawk finding has a ready answer, said beside it.

Two kinds: the helper in backend/migrate/large_tables.py that does the operation the safe
way; and, for a contract step (a drop, a rename, ``SET NOT NULL``) in a pre-deploy
revision, the post-deploy phase (backend/migrate/phases.py). A pre-deploy revision runs
while the previous release still serves, and that release may read or write what the step
removes or newly requires; a post-deploy revision runs once it is gone, so there the same
finding gets no phase hint.
"""

from __future__ import annotations

_HELPER = "backend.migrate.large_tables"

HINTS = {
    "require-concurrent-index-creation": f"use {_HELPER}.create_index_concurrently",
    "setting-not-nullable-field": f"use {_HELPER}.set_not_null",
    "adding-not-nullable-field": f"use {_HELPER}.set_not_null",  # squawk 2: SET NOT NULL
    "adding-required-field": f"add it nullable, backfill, then {_HELPER}.set_not_null",
    "adding-foreign-key-constraint": f"use {_HELPER}.add_foreign_key",
    "constraint-missing-not-valid": f"for a foreign key use {_HELPER}.add_foreign_key",
}

# The rules that flag a contract step. squawk 2 reports ALTER COLUMN ... SET NOT NULL as
# adding-not-nullable-field; older releases called it setting-not-nullable-field.
CONTRACT_RULES = frozenset({
    "ban-drop-column", "ban-drop-table", "ban-drop-constraint", "renaming-column",
    "renaming-table", "adding-not-nullable-field", "setting-not-nullable-field",
})
POST_DEPLOY_HINT = ("a contract step: the previous release may still read or write what "
                    "this removes while the new one deploys; it belongs to the post-deploy "
                    "phase: scripts/create_migration.sh --post-deploy")


def with_hint(rule: str | None, message: str, post_deploy: bool = False) -> str:
    """``message``, followed by what avoids the finding, when there is something: the
    helper, and for a contract step outside the post-deploy phase, that phase."""
    hints = [HINTS.get(rule or "")]
    if rule in CONTRACT_RULES and not post_deploy:
        hints.append(POST_DEPLOY_HINT)
    said = "; ".join(hint for hint in hints if hint)
    return f"{message} ({said})" if said else message
