"""The runtime role's privileges, kept by the lifecycle in one place.

With ``MIGRATION_DATABASE_URL`` set, the owner role migrates and ``DATABASE_URL``'s role
serves. The serving role gets exactly what serving needs: ``SELECT, INSERT, UPDATE, DELETE``
on the application's tables and ``USAGE, SELECT`` on their sequences (identity columns and
serials draw from them), ``SELECT`` only on the lifecycle's own tables (``/readyz`` reads
them), and nothing else: it owns nothing, so it can neither alter, drop nor truncate a table,
and without ``CREATE`` on the schema it can create nothing.

Kept after every upgrade that applied something, in the upgrade's lock, so a table a
revision creates is never served without its grants (a 500 on the first request that
touches it). Default privileges cover tables the owner creates later, by hand included. A
start with nothing pending only reads whether anything is missing: no DDL, no catalog write.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, text

from backend.migrate import LifecycleError, bookkeeping
from backend.postgres import describe_error

log = logging.getLogger("backend.migrations")

DATA = ("SELECT", "INSERT", "UPDATE", "DELETE")

# What the role lacks, or holds that it must not, in the current schema: one row per fault.
_FAULTS = """
    SELECT format('%I', c.relname), c.relkind FROM pg_class c
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'S')
      AND CASE
        WHEN c.relkind = 'S' THEN NOT has_sequence_privilege(:role, c.oid, 'USAGE')
        WHEN c.relname = ANY(:bookkeeping) THEN NOT has_table_privilege(:role, c.oid, 'SELECT')
             OR has_table_privilege(:role, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
        ELSE NOT (has_table_privilege(:role, c.oid, 'SELECT')
                  AND has_table_privilege(:role, c.oid, 'INSERT')
                  AND has_table_privilege(:role, c.oid, 'UPDATE')
                  AND has_table_privilege(:role, c.oid, 'DELETE'))
             OR has_table_privilege(:role, c.oid, 'TRUNCATE, REFERENCES, TRIGGER')
      END
"""


def faults(connection: Connection, role: str) -> list[str]:
    """The tables and sequences whose privileges for ``role`` are not as they should be."""
    rows = connection.execute(text(_FAULTS), {"role": role,
                                              "bookkeeping": list(bookkeeping.TABLES)})
    return [name for name, _ in rows]


def keep(connection: Connection, role: str, applied: bool) -> None:
    """Give ``role`` the runtime privileges (see the module's docstring), in one transaction.

    ``applied``: revisions just ran, so grant whatever they created; otherwise only read
    whether something is missing, and grant only then (a role set up by hand, a table an
    operator created)."""
    try:
        if not applied and not faults(connection, role):
            connection.commit()
            return
        quoted, schema = connection.execute(
            text("SELECT quote_ident(:role), quote_ident(current_schema())"), {"role": role}
        ).one()
        for statement in _statements(quoted, schema):
            connection.execute(text(statement))
        if connection.execute(text("SELECT has_schema_privilege(:role, current_schema(), "
                                   "'CREATE')"), {"role": role}).scalar():
            log.warning("the runtime role %s may create objects in schema %s (PostgreSQL 14 "
                        "and older grant CREATE on public to everyone): as the schema's "
                        "owner, REVOKE CREATE ON SCHEMA public FROM PUBLIC", role,
                        connection.execute(text("SELECT current_schema()")).scalar())
        connection.commit()
    except Exception as exc:
        connection.rollback()
        raise LifecycleError(f"could not keep the privileges of the runtime role {role}: "
                             f"{describe_error(exc)}") from None
    log.info("runtime role %s: data privileges kept on every table", role)


def _statements(role: str, schema: str) -> list[str]:
    """The statements, for an identifier-quoted role and schema."""
    data = ", ".join(DATA)
    lifecycle = ", ".join(bookkeeping.TABLES)
    return [
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        # REVOKE first: a privilege granted by hand beyond data (TRUNCATE, TRIGGER) goes
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}",
        f"GRANT {data} ON ALL TABLES IN SCHEMA {schema} TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        # The lifecycle's tables, where they exist: read, never written, by the runtime role.
        "DO $$ DECLARE t text; BEGIN "
        f"FOREACH t IN ARRAY string_to_array('{lifecycle}', ', ') LOOP "
        "IF to_regclass(t) IS NOT NULL THEN "
        f"EXECUTE format('REVOKE ALL ON %I FROM {role}; GRANT SELECT ON %I TO {role}', t, t); "
        "END IF; END LOOP; END $$",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {data} ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES "
        f"TO {role}",
    ]
