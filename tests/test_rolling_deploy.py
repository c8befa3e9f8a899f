"""A rolling deploy from N to N+1 under traffic, then a rollback of the code to N.

N is the fixture application (``widgets``); N+1 adds three expand revisions on ``widgets``
(a column, a concurrent index, a backfill registered as a background migration) over
100,000 rows, and code that writes the column on every insert. Once N+1's first replica is
ready, ``flask migrations backfill run`` applies the backfill while both releases serve.
Clients send only to ready replicas, as an orchestrator's endpoints do.
"""

from __future__ import annotations

import json

from testkit.rollout import (
    BACKFILL,
    NEXT_REVISIONS,
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


def test_a_rolling_deploy_with_its_backfill_and_a_rollback_fail_no_request(fixture_db,
                                                                          tmp_path):
    # Arrange: two replicas of N serving steady traffic on a table of ROWS widgets.
    fill_widgets(fixture_db, ROWS)
    current, newer = release(tmp_path / "n"), next_release(tmp_path / "next")
    fleet = Fleet(fixture_db, tmp_path)
    try:
        serve_release(fleet, current)
        with Traffic(fleet, clients=6) as traffic:
            # Act: N+1 replaces N replica by replica, its backfill running meanwhile; then
            # N comes back (a code rollback).
            rollout = roll(fleet, current, newer)
        # N+1's code writes a new row in its final form: no backfill needed for it.
        created = request(fleet.replicas["next-1"].port, "POST", "/api/widgets",
                          {"name": "after the deploy"})
    finally:
        fleet.close()

    # Assert: not one request failed, through the deploy and the rollback.
    failures = traffic.failures()
    assert failures == [], failures[:10]
    assert len(traffic.outcomes) > 100
    assert fleet.not_ready_while_serving == [], "an N replica left rotation before it was stopped"
    assert rollout.exit_codes == [0, 0]
    status, body = rollout.rollback_readyz
    assert status == 200
    assert json.loads(body)["ahead"] == [NEXT_REVISIONS[-1][0]]
    assert created[0] == 201 and created[1]["probe_weight"] == len("after the deploy"), created

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
