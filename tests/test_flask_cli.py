"""`flask db ...` from the repository root with only DATABASE_URL set, and its errors."""

import pytest

from backend import MIGRATIONS_DIR
from backend.migrate.phases import read_phases
from backend.migrate.revisions import load_scripts
from tests.conftest import run_flask


def test_flask_db_current_needs_only_database_url(head_db):
    [pre_head] = read_phases(load_scripts(str(MIGRATIONS_DIR))).pre_heads

    proc = run_flask(["db", "current"], head_db)

    # "(head)"; "(effective head)" when a post-deploy revision, not applied yet, needs it
    assert proc.stdout.startswith(pre_head) and "head)" in proc.stdout


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://app:Secr3t@127.0.0.1:1/app", "cannot connect to postgresql://app:***@"),
    ("postgresql://app:Secr3t@db:port/app", "DATABASE_URL is malformed"),
])
def test_bad_database_urls_are_one_line_without_the_password(url, expected):
    proc = run_flask(["db", "upgrade"], None, check=False, DATABASE_URL=url)

    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expected in output
    assert "Traceback" not in output
    assert "Secr3t" not in output
    assert len(output.strip().splitlines()) == 1
