"""A rolling deploy from N to N+1 under traffic, its contract, then a rollback of the code to N.

N is the fixture application (``widgets``); N+1 adds three expand revisions on ``widgets``
(a column, a concurrent index, a backfill registered as a background migration) over
100,000 rows, code that writes the column on every insert, and a post-deploy contract (a
CHECK tying every weight to its name that still lets N's rows through). Once N+1's first
replica is ready, ``flask migrations post-deploy`` is refused (the backfill is not done),
then ``flask migrations backfill run`` applies the backfill while both releases serve; once
N is gone and the runner is done, ``flask migrations post-deploy`` applies the contract under
traffic; then N serves again, on a schema ahead of it by that contract. Clients send only to
ready replicas, as an orchestrator's endpoints do.

All of it with two roles, the deployment docs/operations.md recommends: the replicas'
``DATABASE_URL`` is the runtime role and ``MIGRATION_DATABASE_URL`` the owner, as are the
runner's and post-deploy's (as a Job given the same two URLs runs them), so each start
migrates as the owner and grants the runtime role what N+1's revisions created, and the
workers serve as a role that can change rows but not the schema. One role doing both is the
same deploy with the grants left out; the rest of the suite runs that mode.
"""

from __future__ import annotations

import json

from sqlalchemy.engine import URL

from testkit.rollout import (
    BACKFILL,
    CONTRACT,
    CONTRACT_CHECK,
    Fleet,
    Traffic,
    fill_widgets,
    next_release,
    release,
    roll,
    serve_release,
)
from testkit.support import execute_sql, request
from tests.conftest import refused, run_flask, serving_roles, two_roles

ROWS = 100_000

# What the runtime role may not do to what N+1 added (its column, index, CHECK, and the
# lifecycle's background_migrations, which registering its backfill created) nor to the rest.
SCHEMA_CHANGES = (
    "ALTER TABLE widgets DROP COLUMN probe_weight",
    "ALTER TABLE widgets ALTER COLUMN probe_weight SET NOT NULL",
    "DROP INDEX ix_widgets_probe_weight",
    f"ALTER TABLE widgets DROP CONSTRAINT {CONTRACT_CHECK}",
    "CREATE INDEX intruder ON widgets (probe_weight)",
    "CREATE TABLE intruder (id int)",
    "TRUNCATE widgets",
    "DROP TABLE background_migrations",
    "TRUNCATE background_migrations",
    "UPDATE background_migrations SET state = 'pending'",
    "DELETE FROM background_migrations",
    "UPDATE alembic_version SET version_num = 'x'",
    "DELETE FROM migration_checksums",
)
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def tables_and_grants(owner: URL, runtime: URL) -> dict[str, tuple[str, list[str]]]:
    """Every table of the schema: (its owner, what the runtime role may do on it)."""
    return {table: (owner_name, list(privileges)) for table, owner_name, privileges in
            execute_sql(owner, "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text, "
                               "ARRAY(SELECT p FROM unnest(%s::text[]) AS p "
                               "      WHERE has_table_privilege(%s, c.oid, p)) "
                               "FROM pg_class c WHERE c.relkind IN ('r', 'p') "
                               "AND c.relnamespace = current_schema()::regnamespace",
                        (list(PRIVILEGES), runtime.username))}


def schema_changes_allowed(runtime: URL) -> list[str]:
    """The statements of SCHEMA_CHANGES the runtime role is not refused (each rolled back)."""
    return [statement for statement in SCHEMA_CHANGES if not refused(runtime, statement)]


def test_a_rolling_deploy_with_its_backfill_its_contract_and_a_rollback_fail_no_request(
        roles, tmp_path):
    # Arrange: N migrated by the owner role; two replicas of N serving steady traffic as
    # the runtime role on a table of ROWS widgets.
    owner, runtime = roles
    current, newer = release(tmp_path / "n"), next_release(tmp_path / "next")
    run_flask(["db", "upgrade"], runtime, cwd=current, **two_roles(owner))
    fill_widgets(owner, ROWS)
    fleet = Fleet(runtime, tmp_path, env=two_roles(owner))

    def at_ready():
        # N+1's start has migrated as the owner and kept the grants; the runner and
        # post-deploy, which keep them too when they apply something, have not run yet.
        return (tables_and_grants(owner, runtime), schema_changes_allowed(runtime),
                serving_roles(owner))

    try:
        serve_release(fleet, current)
        with Traffic(fleet, clients=6) as traffic:
            # Act: N+1 replaces N replica by replica, its backfill running meanwhile, its
            # contract applied after; then N comes back (a code rollback).
            rollout = roll(fleet, current, newer, at_ready=at_ready)
        # N+1's code writes a new row in its final form: no backfill needed for it.
        created = request(fleet.replicas["next-1"].port, "POST", "/api/widgets",
                          {"name": "after the deploy"})
        # N's code writes a row without a weight, with the contract in place.
        written_by_n = request(fleet.replicas["n-again"].port, "POST", "/api/widgets",
                               {"name": "after the contract"})
    finally:
        fleet.close()

    # Assert: not one request failed, through the deploy, the contract and the rollback.
    failures = traffic.failures()
    assert failures == [], failures[:10]
    assert len(traffic.outcomes) > 100
    assert fleet.not_ready_while_serving == [], "an N replica left rotation before it was stopped"
    assert rollout.exit_codes == [0, 0]
    assert created[0] == 201 and created[1]["probe_weight"] == len("after the deploy"), created

    # Assert: once N+1's start had migrated, every table was the owner's, the one it
    # created (background_migrations, by registering the backfill) included, and the
    # runtime role held the data privileges on the application's table and could only read
    # the lifecycle's; it could change nothing N+1 added while both releases served.
    data, read = ["SELECT", "INSERT", "UPDATE", "DELETE"], ["SELECT"]
    expected = {"widgets": (owner.username, data), "alembic_version": (owner.username, read),
                "migration_checksums": (owner.username, read),
                "background_migrations": (owner.username, read)}
    grants_at_ready, allowed_at_ready, serving_at_ready = rollout.at_ready
    assert grants_at_ready == expected
    assert allowed_at_ready == []
    # (N's and N+1's workers served as the runtime role, the traffic's rows and all)
    assert serving_at_ready == [runtime.username]
    # and so it still is after the runner, the contract and N's start again.
    assert tables_and_grants(owner, runtime) == expected
    assert schema_changes_allowed(runtime) == []

    # Assert: post-deploy, run before the backfill had started, refused, naming it.
    early = rollout.early_post_deploy
    assert early is not None and early.exit_code == 1, early
    assert "post-deploy refused" in early.output and BACKFILL in early.output, early.output

    # Assert: the backfill committed batch by batch while requests were being answered.
    ran = rollout.backfill
    assert ran is not None and ran.exit_code == 0, ran and ran.log.read_text()
    final = execute_sql(runtime, "SELECT state, rows_done, batches_done "
                                 "FROM background_migrations WHERE name = %s", (BACKFILL,))
    assert final and final[0][0] == "done" and final[0][1] >= ROWS and final[0][2] > 1, final
    part_way = [when for when, state, done in ran.progress
                if state == "running" and 0 < done < final[0][1]]
    assert len(part_way) >= 2, ran.progress
    served = [when for when, outcome, _ in traffic.outcomes
              if part_way[0] <= when <= part_way[-1] and outcome == "ok"]
    assert served, "no request was answered while the backfill was part-way"

    # Assert: every row that existed before the deploy holds the backfilled value.
    assert execute_sql(runtime, "SELECT count(*) FROM widgets WHERE id <= %s "
                                "AND probe_weight IS DISTINCT FROM length(name)",
                       (ROWS,)) == [(0,)], "a pre-existing row missed N+1's backfill"

    # Assert: post-deploy, run once the deploy and the runner were done, applied the
    # contract, validated, while requests were being answered.
    post = rollout.post_deploy
    assert post is not None and post.exit_code == 0, post
    # applied by this run, so not by the refused one
    assert f"applied 1 post-deploy revision(s): {CONTRACT}" in post.output, post.output
    assert execute_sql(runtime, "SELECT convalidated FROM pg_constraint "
                                "WHERE conname = %s AND conrelid = 'widgets'::regclass",
                       (CONTRACT_CHECK,)) == [(True,)]
    during = [when for when, outcome, _ in traffic.outcomes
              if post.started <= when <= post.ended and outcome == "ok"]
    assert during, "no request was answered while post-deploy ran"

    # Assert: N serves again on the contracted schema, ahead of it by the contract (the
    # database's one version row: Alembic drops N+1's main-line head, which the contract
    # depends on), and writes its rows (weight NULL) through the CHECK.
    status, body = rollout.rollback_readyz
    readyz = json.loads(body)
    assert status == 200 and readyz["status"] == "ready", body
    assert readyz["ahead"] == [CONTRACT], body
    assert written_by_n[0] == 201, written_by_n
    assert execute_sql(runtime, "SELECT probe_weight FROM widgets WHERE id = %s",
                       (written_by_n[1]["id"],)) == [(None,)]
