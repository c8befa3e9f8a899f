"""The row-loss rule that scripts/rehearse.sh and the migration data tests share."""

from __future__ import annotations

from migration_tools.row_loss import expected_row_loss, lost_rows


def test_a_step_that_removes_rows_or_a_table_loses_them() -> None:
    before = {"widgets": 3, "parts": 2, "notes": 4}

    assert lost_rows(before, {"widgets": 1, "parts": 2}) == {"widgets": (3, 1), "notes": (4, 0)}


def test_a_downgrade_may_take_away_only_what_its_upgrade_brought() -> None:
    # Rows the upgrade added may go; a table the upgrade created may go.
    assert lost_rows({"widgets": 5, "notes": 4}, {"widgets": 3},
                     reference={"widgets": 3}) == {}
    # Rows that were there before the upgrade may not.
    assert lost_rows({"widgets": 5}, {"widgets": 2},
                     reference={"widgets": 3}) == {"widgets": (5, 2)}


def test_row_loss_declarations_need_a_reason(tmp_path) -> None:
    path = tmp_path / "rev.py"
    path.write_text("def upgrade():\n"
                    "    # rehearse: expect-row-loss widgets duplicates merged by hand\n"
                    "    # rehearse: expect-row-loss public.parts   old test parts\n"
                    "    # rehearse: expect-row-loss notes\n")

    declared, invalid = expected_row_loss(path)

    assert declared == {"widgets": "duplicates merged by hand", "parts": "old test parts"}
    assert invalid == ["notes"]
