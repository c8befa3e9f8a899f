"""scripts/lint_migrations.sh: squawk findings on each revision's offline SQL, mapped back,
and the baseline of findings accepted in revisions that cannot be rewritten.

Each test works on a copy of the project serving the fixture application (``widgets``) cut
to its first revision, which lints clean, and writes the revisions it needs on top.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from migration_tools.lint import strip_bookkeeping
from testkit.support import (
    FIXTURE_REVISIONS,
    child_env,
    fixture_project,
    head_revision,
    revisions,
    write_revision,
)

CREATE_INDEX = 'op.create_index("ix_widgets_name", "widgets", ["name"])'
REQUIRED_COLUMN = 'op.add_column("widgets", sa.Column("rank", sa.BigInteger(), nullable=False))'
TYPE_CHANGE = ('op.alter_column("widgets", "name", type_=sa.Text(), '
               "existing_type=sa.String(length=200))")
READS_ROWS = ('for row in op.get_bind().execute(sa.text("SELECT id FROM widgets")).fetchall():\n'
              '    op.execute(f"UPDATE widgets SET name = name WHERE id = {row.id}")')
INDEX_RULE = "require-concurrent-index-creation"
BASELINE = "migrations/lint-baseline.txt"


@pytest.fixture
def repo(tmp_path) -> Path:
    """The fixture project with its first revision only: the second adds an Integer column,
    which squawk flags (prefer-bigint-over-int), and each test here chooses its findings."""
    project = fixture_project(tmp_path / "repo")
    for path in (project / "migrations/versions").glob(f"*_{FIXTURE_REVISIONS[1]}_*.py"):
        path.unlink()
    return project


def add_revision(repo: Path, message: str, body: str, comments: str = "") -> tuple[str, str]:
    """Write a revision on top of the current head; return its id and repo-relative path."""
    rev = f"ab{len(revisions(repo)):010d}"
    path = write_revision(repo, rev, head_revision(repo), message, upgrade=body,
                          imports=comments)
    return rev, str(path.relative_to(repo))


def lint(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """The script as a user runs it: from the repository root, DATABASE_URL unset."""
    return subprocess.run([str(repo / "scripts/lint_migrations.sh"), *args], cwd=repo,
                          env=child_env(None), capture_output=True, text=True, timeout=120)


def finding(path: str, rev: str, message: str, rule: str) -> str:
    return f'{path} ({rev}, "{message}"): {rule}: '


def summary(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.strip().splitlines()[-1]


def checksums(repo: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in (repo / "migrations/versions").glob("*.py")}


def test_a_clean_history_lints_clean(repo):
    proc = lint(repo)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary(proc) == "1 revision(s) linted, 0 finding(s)"


@pytest.mark.parametrize(("body", "rule"), [
    (CREATE_INDEX, INDEX_RULE),
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
    assert "finding(s)" in summary(proc)


@pytest.mark.parametrize(("body", "helper"), [
    (CREATE_INDEX, "create_index_concurrently"),
    (REQUIRED_COLUMN, "set_not_null"),
])
def test_a_finding_with_a_safe_helper_names_it(repo, body, helper):
    rev, _ = add_revision(repo, "risky change", body)

    proc = lint(repo)

    line = next(line for line in proc.stdout.splitlines() if f"({rev}, " in line)
    assert line.endswith(f"backend.migrate.large_tables.{helper})"), line


def test_a_reasoned_ignore_comment_silences_that_rule(repo):
    comment = f"# squawk-ignore: {INDEX_RULE} widgets is empty until 2.0 ships\n"
    rev, _ = add_revision(repo, "index names", CREATE_INDEX, comments=comment)

    proc = lint(repo, rev)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "1 revision(s) linted, 0 finding(s)"


def test_an_ignore_comment_without_a_reason_is_a_finding_and_silences_nothing(repo):
    comment = f"# squawk-ignore: {INDEX_RULE}\n"
    rev, path = add_revision(repo, "index names", CREATE_INDEX, comments=comment)

    proc = lint(repo, rev)

    assert proc.returncode == 1
    assert finding(path, rev, "index names", "squawk-ignore") in proc.stdout
    assert "needs a reason" in proc.stdout
    assert finding(path, rev, "index names", INDEX_RULE) in proc.stdout


def test_an_ignore_comment_only_silences_the_rule_it_names(repo):
    comment = "# squawk-ignore: changing-column-type the column is new and unused\n"
    rev, path = add_revision(repo, "index names", CREATE_INDEX, comments=comment)

    proc = lint(repo, rev)

    assert proc.returncode == 1
    assert finding(path, rev, "index names", INDEX_RULE) in proc.stdout


def test_warn_only_prints_the_finding_and_exits_zero(repo):
    rev, path = add_revision(repo, "index names", CREATE_INDEX)

    proc = lint(repo, "--warn-only", rev)

    assert proc.returncode == 0
    assert finding(path, rev, "index names", INDEX_RULE) in proc.stdout
    assert summary(proc) == "1 revision(s) linted, 1 finding(s)"


def test_rev_arguments_restrict_what_is_linted(repo):
    first, _ = add_revision(repo, "index names", CREATE_INDEX)
    second, path = add_revision(repo, "widen names", TYPE_CHANGE)

    proc = lint(repo, second)

    assert proc.returncode == 1
    assert first not in proc.stdout
    assert finding(path, second, "widen names", "changing-column-type") in proc.stdout
    assert summary(proc) == "1 revision(s) linted, 1 finding(s)"


def test_an_unknown_rev_is_a_usage_error(repo):
    proc = lint(repo, "0123456789ab")

    assert proc.returncode == 2
    assert "0123456789ab" in proc.stderr


def test_a_revision_that_cannot_render_offline_is_a_finding(repo):
    rev, path = add_revision(repo, "touch every widget", READS_ROWS)
    after, after_path = add_revision(repo, "index names", CREATE_INDEX)

    proc = lint(repo, rev, after)

    assert proc.returncode == 1
    assert f'{path} ({rev}, "touch every widget"): cannot render offline: ' in proc.stdout
    # The other revisions are still linted.
    assert finding(after_path, after, "index names", INDEX_RULE) in proc.stdout


def test_the_settings_file_is_what_excludes_rules(repo):
    add_revision(repo, "index names", CREATE_INDEX)
    (repo / ".squawk.toml").unlink()

    proc = lint(repo)

    assert proc.returncode == 1
    assert ".squawk.toml" in proc.stderr
    assert ": require-lock-timeout: " in proc.stdout


def test_help_documents_the_ignore_comment_and_the_baseline(repo):
    proc = lint(repo, "--help")

    assert proc.returncode == 0
    assert "# squawk-ignore: <rule-name> <why it is safe here>" in proc.stdout
    assert "--warn-only" in proc.stdout
    assert "--write-baseline REASON" in proc.stdout
    assert "<revision> <rule> <reason>" in proc.stdout


# --- the baseline ----------------------------------------------------------------------


def test_write_baseline_accepts_the_findings_without_touching_a_revision(repo):
    rev, path = add_revision(repo, "index names", CREATE_INDEX)
    before = checksums(repo)

    written = lint(repo, "--write-baseline", "applied everywhere since 2019")
    proc = lint(repo)

    assert written.returncode == 0, written.stdout + written.stderr
    assert summary(written) == f"{BASELINE}: 1 accepted finding(s): 1 new, 0 kept, 0 stale removed"
    entries = [line for line in (repo / BASELINE).read_text().splitlines()
               if line and not line.startswith("#")]
    assert entries == [f"{rev} {INDEX_RULE} applied everywhere since 2019"]
    assert checksums(repo) == before
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"accepted: {finding(path, rev, 'index names', INDEX_RULE)}" in proc.stdout
    assert summary(proc) == f"2 revision(s) linted, 0 finding(s), 1 accepted by {BASELINE}"


def test_a_new_revision_is_still_linted_strictly(repo):
    old, _ = add_revision(repo, "index names", CREATE_INDEX)
    (repo / BASELINE).write_text(f"{old} {INDEX_RULE} inherited\n")
    new, path = add_revision(repo, "index names again", CREATE_INDEX.replace("ix_", "ix2_"))

    proc = lint(repo)

    assert proc.returncode == 1
    assert finding(path, new, "index names again", INDEX_RULE) in proc.stdout
    assert summary(proc) == f"3 revision(s) linted, 1 finding(s), 1 accepted by {BASELINE}"


def test_a_baseline_line_whose_finding_is_gone_is_stale(repo):
    rev, _ = add_revision(repo, "index names", CREATE_INDEX)
    (repo / BASELINE).write_text(f"# inherited\n{rev} {INDEX_RULE} inherited\n"
                                 f"{rev} changing-column-type never happened\n"
                                 "0123456789ab adding-required-field a revision long gone\n")

    proc = lint(repo)

    assert proc.returncode == 1
    assert (f"{BASELINE}:3: stale: {rev} changing-column-type no longer occurs; delete the "
            "line, or rewrite the file with scripts/lint_migrations.sh --write-baseline "
            '"<reason>"') in proc.stdout
    assert f"{BASELINE}:4: stale: 0123456789ab adding-required-field" in proc.stdout
    assert summary(proc) == (f"2 revision(s) linted, 0 finding(s), 1 accepted by {BASELINE}, "
                             "2 stale baseline line(s)")


def test_linting_some_revisions_judges_only_their_baseline_lines(repo):
    old, _ = add_revision(repo, "index names", CREATE_INDEX)
    (repo / BASELINE).write_text(f"{FIXTURE_REVISIONS[0]} {INDEX_RULE} once was\n")

    proc = lint(repo, old)

    assert proc.returncode == 1  # its finding is not listed; the other line is not judged
    assert "stale" not in proc.stdout
    assert summary(proc) == "1 revision(s) linted, 1 finding(s)"


def test_a_revision_that_cannot_render_offline_can_be_accepted(repo):
    rev, path = add_revision(repo, "touch every widget", READS_ROWS)
    (repo / BASELINE).write_text(f"{rev} cannot-render-offline reads rows; ran in 2019\n")

    proc = lint(repo)

    assert proc.returncode == 0, proc.stdout
    assert f'accepted: {path} ({rev}, "touch every widget"): cannot render offline: ' \
        in proc.stdout


def test_rewriting_keeps_reasons_and_comments_and_drops_stale_lines(repo):
    old, _ = add_revision(repo, "index names", CREATE_INDEX)
    (repo / BASELINE).write_text(f"# ours\n{old} {INDEX_RULE} reviewed by ops in 2021\n"
                                 f"{old} changing-column-type gone since\n")
    new, _ = add_revision(repo, "widen names", TYPE_CHANGE)

    proc = lint(repo, "--write-baseline", "inherited")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (repo / BASELINE).read_text() == (
        f"# ours\n{old} {INDEX_RULE} reviewed by ops in 2021\n"
        f"{new} changing-column-type inherited\n")
    assert summary(proc) == f"{BASELINE}: 2 accepted finding(s): 1 new, 1 kept, 1 stale removed"


def test_writing_a_baseline_for_a_clean_history_writes_no_file(repo):
    proc = lint(repo, "--write-baseline", "inherited")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary(proc) == f"no findings: nothing to accept, {BASELINE} not written"
    assert not (repo / BASELINE).exists()


@pytest.mark.parametrize(("line", "said"), [
    (f"{FIXTURE_REVISIONS[0]} {INDEX_RULE}", "expected '<revision> <rule> <reason>'"),
    (f"{FIXTURE_REVISIONS[0]} Not-A-Rule because", "expected '<revision> <rule> <reason>'"),
    (f"{FIXTURE_REVISIONS[0]} {INDEX_RULE} twice", "is already accepted on line 2"),
])
def test_a_malformed_baseline_line_is_one_line_naming_the_file_and_line(repo, line, said):
    (repo / BASELINE).write_text(f"# inherited\n{FIXTURE_REVISIONS[0]} {INDEX_RULE} once\n"
                                 f"{line}\n")

    proc = lint(repo)

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"lint_migrations: {BASELINE}:3: ")
    assert said in proc.stderr


@pytest.mark.parametrize(("args", "said"), [
    (("--write-baseline", "  "), "--write-baseline needs a reason"),
    (("--write-baseline", "inherited", "head"), "--write-baseline covers the whole history"),
])
def test_write_baseline_refuses_without_a_reason_or_with_revs(repo, args, said):
    proc = lint(repo, *args)

    assert proc.returncode == 2
    assert said in proc.stderr
    assert not (repo / BASELINE).exists()


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


# --- the post-deploy phase ---------------------------------------------------------------

DROP_COLUMN = 'op.drop_column("widgets", "name")'
SET_NOT_NULL = 'op.alter_column("widgets", "name", existing_type=sa.String(length=200), ' \
               "nullable=False)"
RENAME_COLUMN = 'op.alter_column("widgets", "name", new_column_name="title")'
PHASE_HINT = "it belongs to the post-deploy phase: scripts/create_migration.sh --post-deploy"
CONTRACTS = [(DROP_COLUMN, "ban-drop-column"), (SET_NOT_NULL, "adding-not-nullable-field"),
             (RENAME_COLUMN, "renaming-column")]
# What a contract relying on a background migration starts with; offline it renders nothing.
FINISH = 'finish_backfill("widgets_code")\n'
BACKGROUND = "from backend.migrate.background import finish_backfill\n"


def add_post_revision(repo: Path, rev: str, parent: str | None, message: str,
                      body: str) -> str:
    """A post-deploy revision: the first one a root labelled post, each completing the
    fixture's first revision; return its repo-relative path."""
    path = write_revision(repo, rev, parent, message, upgrade=FINISH + body,
                          imports=BACKGROUND, stamp="20261201_1000",
                          branch_labels=("post",) if parent is None else None,
                          depends_on=FIXTURE_REVISIONS[0])
    return str(path.relative_to(repo))


def finding_line(proc: subprocess.CompletedProcess, rev: str, rule: str) -> str:
    [line] = [ln for ln in proc.stdout.splitlines() if f"({rev}, " in ln and f": {rule}: " in ln]
    return line


@pytest.mark.parametrize(("body", "rule"), CONTRACTS)
def test_a_contract_step_in_a_pre_deploy_revision_names_the_post_deploy_phase(repo, body, rule):
    rev, _ = add_revision(repo, "contract widgets", body)

    proc = lint(repo, rev)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = finding_line(proc, rev, rule)
    assert "the previous release may still read or write what this removes" in line
    assert PHASE_HINT in line


@pytest.mark.parametrize(("body", "rule"), CONTRACTS)
def test_the_same_step_in_a_post_deploy_revision_gets_no_phase_hint(repo, body, rule):
    path = add_post_revision(repo, "ad0000000001", None, "contract widgets", body)

    proc = lint(repo)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = finding_line(proc, "ad0000000001", rule)
    assert line.startswith(finding(path, "ad0000000001", "contract widgets", rule))
    assert "post-deploy" not in line
    assert "cannot render offline" not in proc.stdout
    assert summary(proc) == "2 revision(s) linted, 1 finding(s)"


def test_each_post_deploy_revision_is_rendered_and_linted_from_its_parent(repo):
    # Arrange: a main-line revision and a post-deploy branch of two beside it.
    pre, pre_path = add_revision(repo, "index names", CREATE_INDEX)
    first = add_post_revision(repo, "ad0000000001", None, "index names again",
                              CREATE_INDEX.replace("ix_", "ix2_"))
    second = add_post_revision(repo, "ad0000000002", "ad0000000001", "widen names",
                               TYPE_CHANGE)

    # Act
    everything = lint(repo)
    main_line = lint(repo, "head")
    post_line = lint(repo, "post@head")

    # Assert: every revision, each finding against its own file; head is the pre-deploy
    # head (as for flask db upgrade), post@head the post-deploy one.
    assert finding(first, "ad0000000001", "index names again", INDEX_RULE) in everything.stdout
    assert finding(second, "ad0000000002", "widen names", "changing-column-type") \
        in everything.stdout
    assert finding(pre_path, pre, "index names", INDEX_RULE) in everything.stdout
    assert summary(everything) == "4 revision(s) linted, 3 finding(s)"
    assert main_line.returncode == 1, main_line.stderr
    assert finding(pre_path, pre, "index names", INDEX_RULE) in main_line.stdout
    assert summary(main_line) == "1 revision(s) linted, 1 finding(s)"
    assert post_line.returncode == 1, post_line.stderr
    assert "(ad0000000002, " in post_line.stdout and "(ad0000000001, " not in post_line.stdout
    assert summary(post_line) == "1 revision(s) linted, 1 finding(s)"
