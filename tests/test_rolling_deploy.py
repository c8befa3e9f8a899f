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
"""

from __future__ import annotations

import json

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

ROWS = 100_000


def test_a_rolling_deploy_with_its_backfill_its_contract_and_a_rollback_fail_no_request(
        fixture_db, tmp_path):
    # Arrange: two replicas of N serving steady traffic on a table of ROWS widgets.
    fill_widgets(fixture_db, ROWS)
    current, newer = release(tmp_path / "n"), next_release(tmp_path / "next")
    fleet = Fleet(fixture_db, tmp_path)
    try:
        serve_release(fleet, current)
        with Traffic(fleet, clients=6) as traffic:
            # Act: N+1 replaces N replica by replica, its backfill running meanwhile, its
            # contract applied after; then N comes back (a code rollback).
            rollout = roll(fleet, current, newer)
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

    # Assert: post-deploy, run before the backfill had started, refused, naming it.
    early = rollout.early_post_deploy
    assert early is not None and early.exit_code == 1, early
    assert "post-deploy refused" in early.output and BACKFILL in early.output, early.output

    # Assert: the backfill committed batch by batch while requests were being answered.
    ran = rollout.backfill
    assert ran is not None and ran.exit_code == 0, ran and ran.log.read_text()
    final = execute_sql(fixture_db, "SELECT state, rows_done, batches_done "
                                    "FROM background_migrations WHERE name = %s", (BACKFILL,))
    assert final and final[0][0] == "done" and final[0][1] >= ROWS and final[0][2] > 1, final
    part_way = [when for when, state, done in ran.progress
                if state == "running" and 0 < done < final[0][1]]
    assert len(part_way) >= 2, ran.progress
    served = [when for when, outcome, _ in traffic.outcomes
              if part_way[0] <= when <= part_way[-1] and outcome == "ok"]
    assert served, "no request was answered while the backfill was part-way"

    # Assert: every row that existed before the deploy holds the backfilled value.
    assert execute_sql(fixture_db, "SELECT count(*) FROM widgets WHERE id <= %s "
                                   "AND probe_weight IS DISTINCT FROM length(name)",
                       (ROWS,)) == [(0,)], "a pre-existing row missed N+1's backfill"

    # Assert: post-deploy, run once the deploy and the runner were done, applied the
    # contract, validated, while requests were being answered.
    post = rollout.post_deploy
    assert post is not None and post.exit_code == 0, post
    # applied by this run, so not by the refused one
    assert f"applied 1 post-deploy revision(s): {CONTRACT}" in post.output, post.output
    assert execute_sql(fixture_db, "SELECT convalidated FROM pg_constraint "
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
    assert execute_sql(fixture_db, "SELECT probe_weight FROM widgets WHERE id = %s",
                       (written_by_n[1]["id"],)) == [(None,)]
