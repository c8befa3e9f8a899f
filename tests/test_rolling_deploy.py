"""A rolling deploy from N to N+1 under traffic, then a rollback of the code to N.

N is this checkout; N+1 adds three expand revisions on ``tasks`` (a column, a concurrent
index, a batched backfill) over 100,000 rows. Clients send only to ready replicas, as an
orchestrator's endpoints do.
"""

from __future__ import annotations

import json
import time

from tests.rollout import NEXT_REVISIONS, Fleet, Traffic, fill_tasks, next_release
from tests.support import ROOT, http_get

ROWS = 100_000


def test_a_rolling_deploy_and_a_rollback_fail_no_request(head_db, tmp_path):
    # Arrange: two replicas of N serving steady traffic.
    _, project = fill_tasks(head_db, ROWS)
    newer = next_release(tmp_path / "next")
    fleet = Fleet(head_db, tmp_path)
    try:
        for name in ("n-1", "n-2"):
            fleet.start(name, ROOT)
        for name in ("n-1", "n-2"):
            fleet.wait_ready(name)
        with Traffic(fleet, project, clients=6) as traffic:
            time.sleep(1)

            # Act: N+1 starts, migrates and becomes ready; then N goes, one by one.
            fleet.start("next-1", newer)
            fleet.wait_ready("next-1", timeout=180)
            codes = [fleet.retire("n-1")]
            fleet.start("next-2", newer)
            fleet.wait_ready("next-2")
            codes.append(fleet.retire("n-2"))
            time.sleep(1)

            # ... and the team rolls the code back: N starts on N+1's schema.
            fleet.start("n-again", ROOT)
            fleet.wait_ready("n-again")
            status, body = http_get(fleet.replicas["n-again"].port, "/readyz")
            time.sleep(1)
        failures = traffic.failures()
        served = len(traffic.outcomes)
    finally:
        fleet.close()

    # Assert
    assert failures == [], failures[:10]
    assert served > 100
    assert fleet.not_ready_while_serving == [], "an N replica left rotation before it was stopped"
    assert codes == [0, 0]
    assert status == 200
    assert json.loads(body)["ahead"] == [NEXT_REVISIONS[-1][0]]
