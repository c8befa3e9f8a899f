"""Scratch databases, shared by the verifier, the rehearsal, the tests and the benchmarks."""

from __future__ import annotations

import psycopg2
import pytest

from backend.postgres import connect_kwargs
from migration_tools.scratch import leftovers, scratch_database
from testkit.support import execute_sql


def test_a_scratch_database_is_dropped_even_when_the_block_fails_with_a_session_open(
        pg_server):
    # Arrange: a session left connected, then a failure inside the block.
    with pytest.raises(RuntimeError), scratch_database(pg_server.url, "probe_scratch") as url:
        session = psycopg2.connect(**connect_kwargs(url))
        name = url.database
        assert name.startswith("probe_scratch_") and name in leftovers(pg_server.url,
                                                                      "probe_scratch")
        raise RuntimeError("the job failed")

    # Assert: gone, the session notwithstanding (DROP ... WITH (FORCE)).
    assert leftovers(pg_server.url, "probe_scratch") == []
    assert execute_sql(pg_server.url, "SELECT 1 FROM pg_database WHERE datname = %s",
                       (name,)) == []
    with pytest.raises(psycopg2.Error):  # the forced drop ended the session
        session.cursor().execute("SELECT 1")


def test_a_scratch_database_starts_from_template0(pg_server):
    execute_sql(pg_server.url.set(database="template1"),
                "CREATE TABLE IF NOT EXISTS probe_site_addition (id int)")
    try:
        with scratch_database(pg_server.url, "probe_scratch") as url:
            tables = execute_sql(url, "SELECT tablename FROM pg_tables "
                                      "WHERE schemaname = 'public'")
    finally:
        execute_sql(pg_server.url.set(database="template1"),
                    "DROP TABLE IF EXISTS probe_site_addition")

    assert tables == []
