"""A pytest plugin that check_compat loads into the previous release's test run.

Why a plugin and not pytest's printed summary: the verdict depends on *how* the run went
(a test failed on the schema, or the tests never got going: a module that does not import,
nothing collected, everything skipped), and the printed summary is made for people, not
parsers. This records each failed collection and each failed test phase, with its node id
and its error's one line, and how many tests ran, as JSON in the file named by
``COMPAT_REPORT_FILE``.

It runs inside the older release's tree, whose ``migration_tools`` may not have this
module, so check_compat copies this file beside the run instead of importing it from there.
It imports nothing but the standard library.
"""

from __future__ import annotations

import json
import os
from typing import Any

REPORT_ENV = "COMPAT_REPORT_FILE"

_state: dict[str, Any] = {"collect_errors": [], "failures": [], "ran": 0, "skipped": 0}


def one_line(text: str) -> str:
    """The line that says what went wrong: pytest marks it ``E   ``; else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    marked = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (marked or lines or ["(no detail)"])[-1]


def _detail(report: Any) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    message = getattr(crash, "message", "")
    if message:
        return message.strip().splitlines()[0]
    return one_line(getattr(report, "longreprtext", "") or str(report.longrepr or ""))


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        _state["collect_errors"].append({"nodeid": report.nodeid, "detail": _detail(report)})


def pytest_runtest_logreport(report: Any) -> None:
    if report.failed:
        _state["failures"].append({"nodeid": report.nodeid, "when": report.when,
                                   "detail": _detail(report)})
    if report.skipped:
        _state["skipped"] += 1
    elif report.when == "call":
        _state["ran"] += 1


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(_state, out)
