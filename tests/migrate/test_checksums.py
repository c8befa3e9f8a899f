"""An applied revision's file is compared with the checksum recorded when it ran; a file
fixed on purpose names the checksum of the version it replaces."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from backend import MIGRATIONS_DIR, create_app
from backend.config import Config
from backend.migrate import checksums
from testkit.support import ROOT, execute_sql, head_revision

SCRIPTS = ScriptDirectory(str(MIGRATIONS_DIR))
FIXED = "b1d4e7a2c905"  # its downgrade was fixed after it shipped
EARLIER = "281c6e8025c31236e2a782b75a189c46650f308d0a611977fe9c861b4fff1b06"


def test_a_database_that_applied_the_earlier_version_accepts_the_fixed_file():
    on_disk = checksums.script_checksums(SCRIPTS)
    current = [head_revision(ROOT)]

    assert EARLIER in checksums.earlier_versions(SCRIPTS.get_revision(FIXED).path)
    assert checksums.edited_revisions(SCRIPTS, current, {FIXED: EARLIER}, on_disk) == []


def test_any_other_checksum_is_still_an_edit():
    on_disk = checksums.script_checksums(SCRIPTS)

    edited = checksums.edited_revisions(SCRIPTS, [head_revision(ROOT)], {FIXED: "0" * 64}, on_disk)

    assert edited == [FIXED]


def test_readyz_accepts_the_earlier_version_and_refuses_an_edit(head_db):
    # Arrange: the database recorded the fixed revision as its earlier file was.
    execute_sql(head_db, f"UPDATE {checksums.TABLE} SET checksum = %s WHERE revision = %s",
                (EARLIER, FIXED))
    client = create_app(Config(database_url=head_db)).test_client()

    # Act, assert: ready; then with a checksum of no known version, refused as edited.
    assert client.get("/readyz").status_code == 200
    execute_sql(head_db, f"UPDATE {checksums.TABLE} SET checksum = %s WHERE revision = %s",
                ("0" * 64, FIXED))
    refused = client.get("/readyz")
    assert refused.status_code == 503 and FIXED in refused.get_json()["reason"]
