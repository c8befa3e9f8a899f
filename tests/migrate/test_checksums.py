"""An applied revision's file is compared with the checksum recorded when it ran; a file
fixed on purpose names the checksum of the version it replaces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from backend.migrate import checksums
from testkit.support import FIXTURE_REVISIONS, app_get, execute_sql, fixture_project

FIXED = FIXTURE_REVISIONS[-1]  # its downgrade is fixed after it shipped


@dataclass
class FixedHistory:
    repo: Path
    scripts: ScriptDirectory
    earlier: str  # the checksum of the file as it shipped


@pytest.fixture
def fixed(tmp_path) -> FixedHistory:
    """A project whose last revision was fixed after it shipped, naming the shipped file's
    checksum, as a developer does when a released revision needs a fix."""
    repo = fixture_project(tmp_path / "repo")
    path = next((repo / "migrations/versions").glob(f"*_{FIXED}_*.py"))
    earlier = checksums.file_checksum(path)
    shipped = path.read_text()
    fixed_text = shipped.replace(
        "def downgrade():\n",
        "def downgrade():\n    # fixed: the column goes only if it is still there\n", 1)
    fixed_text = fixed_text.replace('op.drop_column("widgets", "size")',
                                    'op.execute("ALTER TABLE widgets DROP COLUMN IF EXISTS size")')
    assert fixed_text != shipped
    path.write_text(f"# checksum-of-earlier-version: {earlier} downgrade tolerates a missing "
                    f"column; the upgrade is unchanged\n{fixed_text}")
    return FixedHistory(repo, ScriptDirectory(str(repo / "migrations")), earlier)


def test_a_database_that_applied_the_earlier_version_accepts_the_fixed_file(fixed):
    on_disk = checksums.script_checksums(fixed.scripts)
    current = [FIXTURE_REVISIONS[-1]]

    assert on_disk[FIXED] != fixed.earlier
    assert fixed.earlier in checksums.earlier_versions(fixed.scripts.get_revision(FIXED).path)
    assert checksums.edited_revisions(fixed.scripts, current, {FIXED: fixed.earlier},
                                      on_disk) == []


def test_any_other_checksum_is_still_an_edit(fixed):
    on_disk = checksums.script_checksums(fixed.scripts)

    edited = checksums.edited_revisions(fixed.scripts, [FIXTURE_REVISIONS[-1]],
                                        {FIXED: "0" * 64}, on_disk)

    assert edited == [FIXED]


def test_readyz_accepts_the_earlier_version_and_refuses_an_edit(fixture_db, fixed):
    # Arrange: the database applied the fixed revision as its file shipped.
    recorded = execute_sql(fixture_db, f"SELECT checksum FROM {checksums.TABLE} "
                                       "WHERE revision = %s", (FIXED,))
    assert recorded == [(fixed.earlier,)]

    # Act, assert: ready; then with a checksum of no known version, refused as edited.
    assert app_get(fixed.repo, fixture_db, "/readyz")[0] == 200
    execute_sql(fixture_db, f"UPDATE {checksums.TABLE} SET checksum = %s WHERE revision = %s",
                ("0" * 64, FIXED))
    status, body = app_get(fixed.repo, fixture_db, "/readyz")
    assert status == 503 and FIXED in body["reason"]
