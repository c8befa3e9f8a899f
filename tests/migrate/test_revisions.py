"""Where the database stands: pending revisions, also across a merge."""

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from backend.migrate.revisions import schema_status
from testkit.support import FIXTURE_REVISIONS, fixture_project, write_revision
from tests.conftest import run_flask


def test_pending_after_a_merge_includes_the_other_branch(fixture_db, tmp_path):
    # Arrange: two branches on head, merged; the database has only branch a.
    repo = fixture_project(tmp_path / "repo")
    head = FIXTURE_REVISIONS[-1]
    write_revision(repo, "aaaa00000001", head, "branch a", stamp="20261120_1000")
    run_flask(["db", "upgrade"], fixture_db, cwd=repo)
    write_revision(repo, "bbbb00000002", head, "branch b", stamp="20261120_1001")
    write_revision(repo, "cccc00000003", ("aaaa00000001", "bbbb00000002"), "merge heads",
                   stamp="20261120_1002")
    engine = create_engine(fixture_db)

    # Act
    with engine.connect() as connection:
        status = schema_status(connection, ScriptDirectory(str(repo / "migrations")))
    engine.dispose()

    # Assert
    assert status.current == ["aaaa00000001"]
    assert status.head == ["cccc00000003"]
    assert status.pending == ["bbbb00000002", "cccc00000003"]
    assert not status.at_head
