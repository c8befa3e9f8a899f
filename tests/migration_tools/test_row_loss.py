"""The row-loss rule that scripts/rehearse.sh and the migration data tests share."""

from __future__ import annotations

from migration_tools.row_loss import expected_row_loss, lost_rows


def test_a_step_that_removes_rows_or_a_table_loses_them() -> None:
    before = {"tasks": 3, "projects": 2, "notes": 4}

    assert lost_rows(before, {"tasks": 1, "projects": 2}) == {"tasks": (3, 1), "notes": (4, 0)}


def test_a_downgrade_may_take_away_only_what_its_upgrade_brought() -> None:
    # Rows the upgrade added may go; a table the upgrade created may go.
    assert lost_rows({"tasks": 5, "notes": 4}, {"tasks": 3}, reference={"tasks": 3}) == {}
    # Rows that were there before the upgrade may not.
    assert lost_rows({"tasks": 5}, {"tasks": 2}, reference={"tasks": 3}) == {"tasks": (5, 2)}


def test_row_loss_declarations_need_a_reason(tmp_path) -> None:
    path = tmp_path / "rev.py"
    path.write_text("def upgrade():\n"
                    "    # rehearse: expect-row-loss tasks duplicates merged by hand\n"
                    "    # rehearse: expect-row-loss public.users   old test accounts\n"
                    "    # rehearse: expect-row-loss projects\n")

    declared, invalid = expected_row_loss(path)

    assert declared == {"tasks": "duplicates merged by hand", "users": "old test accounts"}
    assert invalid == ["projects"]
