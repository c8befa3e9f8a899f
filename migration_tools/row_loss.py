"""The row-loss rule, one home: ``scripts/rehearse.sh`` applies it to a copy of real data,
the migration tests (``tests/migrations``) to their data files, so a revision passes or
fails both for the same rows.

A revision must not lose rows unless its file says so, with a reason:
``# rehearse: expect-row-loss <table> <reason>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

EXPECT_ROW_LOSS = re.compile(r"^[ \t]*#[ \t]*rehearse:[ \t]*expect-row-loss\b[ \t]*(\S*)[ \t]*(.*?)"
                             r"[ \t]*$", re.M)


def expected_row_loss(path: str | Path | None) -> tuple[dict[str, str], list[str]]:
    """Tables a revision says it empties on purpose, and declarations that give no reason.

    ``# rehearse: expect-row-loss <table> <reason>`` in the revision file. A declaration
    without a reason does not count: like ``squawk-ignore``, an exception must say why.
    """
    if path is None:
        return {}, []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return {}, []
    declared, invalid = {}, []
    for table, reason in EXPECT_ROW_LOSS.findall(text):
        if table and reason:
            declared[table.removeprefix("public.")] = reason
        else:
            invalid.append(table or "(no table)")
    return declared, invalid


def lost_rows(before: Mapping[str, int], after: Mapping[str, int],
              reference: Mapping[str, int] | None = None) -> dict[str, tuple[int, int]]:
    """Tables with fewer rows after a step than before it, ``{table: (before, after)}``; a
    dropped table has none left.

    For a downgrade, ``reference`` is the state before that revision's upgrade: only tables
    that existed then count, and only rows below what they had then. A table the upgrade
    created goes with its downgrade, rows the upgrade added may go too, and rows a later
    revision removed are that revision's finding, not this one's.
    """
    lost = {}
    for name, count in before.items():
        floor = count
        if reference is not None:
            if name not in reference:
                continue
            floor = min(floor, reference[name])
        left = after.get(name, 0)
        if left < floor:
            lost[name] = (count, left)
    return lost
