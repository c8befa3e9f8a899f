"""`flask db ...` from the repository root with only DATABASE_URL set, and its errors."""

import pytest

from tests.conftest import run_flask


def test_flask_db_current_needs_only_database_url(head_db):
    proc = run_flask(["db", "current"], head_db)

    assert "(head)" in proc.stdout


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
