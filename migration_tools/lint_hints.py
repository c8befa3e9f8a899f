"""Where a squawk finding has a ready answer: the helper in backend/migrate/large_tables.py
that does the operation the safe way, named after the finding's message."""

from __future__ import annotations

_HELPER = "backend.migrate.large_tables"

HINTS = {
    "require-concurrent-index-creation": f"use {_HELPER}.create_index_concurrently",
    "setting-not-nullable-field": f"use {_HELPER}.set_not_null",
    "adding-not-nullable-field": f"add it nullable, backfill, then {_HELPER}.set_not_null",
    "adding-required-field": f"add it nullable, backfill, then {_HELPER}.set_not_null",
    "adding-foreign-key-constraint": f"use {_HELPER}.add_foreign_key",
    "constraint-missing-not-valid": f"for a foreign key use {_HELPER}.add_foreign_key",
}


def with_hint(rule: str | None, message: str) -> str:
    """``message``, followed by the helper that avoids the finding, when there is one."""
    hint = HINTS.get(rule or "")
    return f"{message} ({hint})" if hint else message
