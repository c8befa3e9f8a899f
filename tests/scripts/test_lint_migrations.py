"""scripts/lint_migrations.sh: squawk findings on each revision's offline SQL, mapped back."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from migration_tools.lint import strip_bookkeeping
from testkit.support import copy_repository
from tests.conftest import child_env

CREATE_INDEX = 'op.create_index("ix_tasks_title", "tasks", ["title"])'
REQUIRED_COLUMN = 'op.add_column("tasks", sa.Column("priority", sa.BigInteger(), nullable=False))'
TYPE_CHANGE = ('op.alter_column("tasks", "title", type_=sa.Text(), '
               "existing_type=sa.String(length=500))")
READS_ROWS = ('for row in op.get_bind().execute(sa.text("SELECT id FROM tasks")).fetchall():\n'
              '        op.execute(f"UPDATE tasks SET title = title WHERE id = {row.id}")')
REVISION = '''"""{message}

Revision ID: {rev}
Revises: {down}
Create Date: 2026-12-01 00:00:00.000000+00:00

"""
from alembic import op
import sqlalchemy as sa

{comments}
revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    {body}


def downgrade():
    pass
'''


@pytest.fixture
def repo(tmp_path) -> Path:
    dest = copy_repository(tmp_path / "repo")
    return dest


def add_revision(repo: Path, message: str, body: str, comments: str = "") -> tuple[str, str]:
    """Write a revision on top of the current head; return its id and repo-relative path."""
    head = ScriptDirectory(str(repo / "migrations")).get_current_head()
    rev = uuid.uuid4().hex[:12]
    relative = f"migrations/versions/20261201_0000_{rev}_{message.replace(' ', '_')}.py"
    (repo / relative).write_text(REVISION.format(message=message, rev=rev, down=head,
                                                 comments=comments, body=body))
    return rev, relative


def lint(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """The script as a user runs it: from the repository root, DATABASE_URL unset."""
    return subprocess.run([str(repo / "scripts/lint_migrations.sh"), *args], cwd=repo,
                          env=child_env(None), capture_output=True, text=True, timeout=120)


def finding(path: str, rev: str, message: str, rule: str) -> str:
    return f'{path} ({rev}, "{message}"): {rule}: '


def test_the_shipped_history_lints_clean(repo):
    shipped = len(list((repo / "migrations/versions").glob("*.py")))

    proc = lint(repo)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"{shipped} revision(s) linted, 0 finding(s)"


@pytest.mark.parametrize(("body", "rule"), [
    (CREATE_INDEX, "require-concurrent-index-creation"),
    (REQUIRED_COLUMN, "adding-required-field"),
    (TYPE_CHANGE, "changing-column-type"),
])
def test_flags_an_unsafe_revision_naming_its_file_and_message(repo, body, rule):
    rev, path = add_revision(repo, "risky change", body)

    proc = lint(repo)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if f"({rev}, " in line]
    assert any(line.startswith(finding(path, rev, "risky change", rule)) for line in lines), \
        proc.stdout
    assert "finding(s)" in proc.stdout.splitlines()[-1]


def test_a_reasoned_ignore_comment_silences_that_rule(repo):
    comment = "# squawk-ignore: require-concurrent-index-creation tasks is empty until 2.0 ships\n"
    rev, _ = add_revision(repo, "index titles", CREATE_INDEX, comments=comment)

    proc = lint(repo, rev)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "1 revision(s) linted, 0 finding(s)"


def test_an_ignore_comment_without_a_reason_is_a_finding_and_silences_nothing(repo):
    comment = "# squawk-ignore: require-concurrent-index-creation\n"
    rev, path = add_revision(repo, "index titles", CREATE_INDEX, comments=comment)

    proc = lint(repo, rev)

    assert proc.returncode == 1
    assert finding(path, rev, "index titles", "squawk-ignore") in proc.stdout
    assert "needs a reason" in proc.stdout
    assert finding(path, rev, "index titles", "require-concurrent-index-creation") in proc.stdout


def test_an_ignore_comment_only_silences_the_rule_it_names(repo):
    comment = "# squawk-ignore: changing-column-type the column is new and unused\n"
    rev, path = add_revision(repo, "index titles", CREATE_INDEX, comments=comment)

    proc = lint(repo, rev)

    assert proc.returncode == 1
    assert finding(path, rev, "index titles", "require-concurrent-index-creation") in proc.stdout


def test_warn_only_prints_the_finding_and_exits_zero(repo):
    rev, path = add_revision(repo, "index titles", CREATE_INDEX)

    proc = lint(repo, "--warn-only", rev)

    assert proc.returncode == 0
    assert finding(path, rev, "index titles", "require-concurrent-index-creation") in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "1 revision(s) linted, 1 finding(s)"


def test_rev_arguments_restrict_what_is_linted(repo):
    first, _ = add_revision(repo, "index titles", CREATE_INDEX)
    second, path = add_revision(repo, "widen titles", TYPE_CHANGE)

    proc = lint(repo, second)

    assert proc.returncode == 1
    assert first not in proc.stdout
    assert finding(path, second, "widen titles", "changing-column-type") in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "1 revision(s) linted, 1 finding(s)"


def test_an_unknown_rev_is_a_usage_error(repo):
    proc = lint(repo, "0123456789ab")

    assert proc.returncode == 2
    assert "0123456789ab" in proc.stderr


def test_a_revision_that_cannot_render_offline_is_a_finding(repo):
    rev, path = add_revision(repo, "touch every task", READS_ROWS)
    after, after_path = add_revision(repo, "index titles", CREATE_INDEX)

    proc = lint(repo, rev, after)

    assert proc.returncode == 1
    assert f'{path} ({rev}, "touch every task"): cannot render offline: ' in proc.stdout
    # The other revisions are still linted.
    assert finding(after_path, after, "index titles", "require-concurrent-index-creation") \
        in proc.stdout


def test_the_settings_file_is_what_excludes_rules(repo):
    (repo / ".squawk.toml").unlink()

    proc = lint(repo)

    assert proc.returncode == 1
    assert ".squawk.toml" in proc.stderr
    assert ": require-lock-timeout: " in proc.stdout


def test_help_documents_the_ignore_comment(repo):
    proc = lint(repo, "--help")

    assert proc.returncode == 0
    assert "# squawk-ignore: <rule-name> <why it is safe here>" in proc.stdout
    assert "--warn-only" in proc.stdout


def test_alembic_bookkeeping_is_not_linted():
    rendered = (
        "BEGIN;\n\nCREATE TABLE alembic_version (\n    version_num VARCHAR(32) NOT NULL, \n"
        "    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n);\n\n"
        "CREATE INDEX ix_a ON a (b);\n\n"
        "INSERT INTO alembic_version (version_num) VALUES ('1') "
        "RETURNING alembic_version.version_num;\n\n"
        "UPDATE alembic_version SET version_num='2' WHERE alembic_version.version_num = '1';\n\n"
        "COMMIT;\n"
    )

    sql = strip_bookkeeping(rendered)

    assert "alembic_version" not in sql
    assert "BEGIN;" in sql and "COMMIT;" in sql
    assert "CREATE INDEX ix_a ON a (b);" in sql
