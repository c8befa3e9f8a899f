"""A rolling deploy from N to N+1 under traffic, then a rollback of the code to N.

N is the fixture application (``widgets``); N+1 adds three expand revisions on ``widgets``
(a column, a concurrent index, a batched backfill) over 100,000 rows. Clients send only to
ready replicas, as an orchestrator's endpoints do.
"""

from __future__ import annotations

import json

from testkit.rollout import (
    NEXT_REVISIONS,
    Fleet,
    Traffic,
    fill_widgets,
    next_release,
    release,
    roll,
    serve_release,
)
from testkit.support import execute_sql

ROWS = 100_000


def test_a_rolling_deploy_and_a_rollback_fail_no_request(fixture_db, tmp_path):
    # Arrange: two replicas of N serving steady traffic on a table of ROWS widgets.
    fill_widgets(fixture_db, ROWS)
    current, newer = release(tmp_path / "n"), next_release(tmp_path / "next")
    fleet = Fleet(fixture_db, tmp_path)
    try:
        serve_release(fleet, current)
        with Traffic(fleet, clients=6) as traffic:
            # Act: N+1 replaces N replica by replica; then N comes back (a code rollback).
            rollout = roll(fleet, current, newer)
    finally:
        fleet.close()

    # Assert
    failures = traffic.failures()
    assert failures == [], failures[:10]
    assert len(traffic.outcomes) > 100
    assert fleet.not_ready_while_serving == [], "an N replica left rotation before it was stopped"
    assert rollout.exit_codes == [0, 0]
    status, body = rollout.rollback_readyz
    assert status == 200
    assert json.loads(body)["ahead"] == [NEXT_REVISIONS[-1][0]]
    assert execute_sql(fixture_db, "SELECT count(*) FROM widgets WHERE probe_weight IS NULL "
                                   "AND id <= %s", (ROWS,)) == [(0,)], "N+1's backfill ran"
