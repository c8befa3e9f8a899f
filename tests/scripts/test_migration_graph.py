"""scripts/migration_graph.sh: the revision history as Mermaid, heads and current marked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from migration_tools.graph import Node, render_mermaid
from testkit.support import copy_repository, revisions
from tests.conftest import child_env, execute_sql, run_flask

SHIPPED = revisions()
NODE = re.compile(r'^\s+rev_(\w+)\["(.*)"\]$', re.M)
EDGE = re.compile(r"^\s+rev_(\w+) --> rev_(\w+)$", re.M)
CLASS = re.compile(r"^\s+class ([\w,]+) (\w+)$", re.M)


def graph(repo: Path, url=None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "scripts/migration_graph.sh"), *args], cwd=repo,
                          env=child_env(url), capture_output=True, text=True, timeout=60)


def nodes(chart: str) -> dict[str, str]:
    return dict(NODE.findall(chart))


def edges(chart: str) -> set[tuple[str, str]]:
    return set(EDGE.findall(chart))


def classed(chart: str, name: str) -> list[str]:
    found = []
    for members, cls in CLASS.findall(chart):
        if cls == name:
            found += [member.removeprefix("rev_") for member in members.split(",")]
    return found


def branch_file(rev: str, parent: str | tuple[str, str], message: str) -> str:
    return (f'"""{message}"""\nrevision = "{rev}"\ndown_revision = {parent!r}\n'
            "branch_labels = None\ndepends_on = None\n\n\n"
            "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n")


@pytest.fixture
def repo(tmp_path) -> Path:
    return copy_repository(tmp_path / "repo")


def test_the_shipped_history_has_every_revision_and_one_head(repo):
    # Act
    proc = graph(repo)

    # Assert
    assert proc.returncode == 0, proc.stderr
    chart = proc.stdout
    assert chart.splitlines()[0] == "flowchart TD"
    scripts = ScriptDirectory(str(repo / "migrations"))
    every = {s.revision for s in scripts.walk_revisions()}
    labels = nodes(chart)
    assert set(labels) == every and set(SHIPPED) <= every
    for script in scripts.walk_revisions():
        assert script.doc in labels[script.revision]
        if script.down_revision:
            assert (script.down_revision, script.revision) in edges(chart)
    [head] = scripts.get_heads()
    assert classed(chart, "head") == [head]
    assert [rev for rev, label in labels.items() if "(head)" in label] == [head]
    assert "(current)" not in chart and classed(chart, "current") == []
    assert "DATABASE_URL is not set" in proc.stderr


def test_a_merge_shows_both_parents_as_edges_into_it(repo):
    # Arrange: two branches on the head, then a merge revision joining them.
    [parent] = ScriptDirectory(str(repo / "migrations")).get_heads()
    versions = repo / "migrations/versions"
    (versions / "20261120_1200_aaaa00000001_branch_a.py").write_text(
        branch_file("aaaa00000001", parent, "branch a"))
    (versions / "20261120_1300_bbbb00000002_branch_b.py").write_text(
        branch_file("bbbb00000002", parent, "branch b"))
    (versions / "20261121_0900_cccc00000003_merge.py").write_text(
        branch_file("cccc00000003", ("aaaa00000001", "bbbb00000002"), "merge a and b"))

    # Act
    proc = graph(repo)

    # Assert
    assert proc.returncode == 0, proc.stderr
    chart = proc.stdout
    assert {(parent, "aaaa00000001"), (parent, "bbbb00000002"),
            ("aaaa00000001", "cccc00000003"), ("bbbb00000002", "cccc00000003")} <= edges(chart)
    assert classed(chart, "head") == ["cccc00000003"]
    assert "merge a and b" in nodes(chart)["cccc00000003"]


def test_two_heads_are_both_marked(repo):
    [parent] = ScriptDirectory(str(repo / "migrations")).get_heads()
    for rev in ("aaaa00000001", "bbbb00000002"):
        (repo / f"migrations/versions/20261120_1200_{rev}_branch.py").write_text(
            branch_file(rev, parent, f"branch {rev}"))

    proc = graph(repo)

    assert proc.returncode == 0, proc.stderr
    assert sorted(classed(proc.stdout, "head")) == ["aaaa00000001", "bbbb00000002"]
    assert "2 head(s)" in proc.stderr


def test_the_database_revision_is_marked_current(repo, head_db):
    # Arrange: the database one revision behind head.
    [head] = ScriptDirectory(str(repo / "migrations")).get_heads()
    below = ScriptDirectory(str(repo / "migrations")).get_revision(head).down_revision
    run_flask(["db", "downgrade", below], head_db, cwd=repo)
    assert execute_sql(head_db, "SELECT version_num FROM alembic_version") == [(below,)]

    # Act
    proc = graph(repo, head_db)

    # Assert
    assert proc.returncode == 0, proc.stderr
    labels = nodes(proc.stdout)
    assert classed(proc.stdout, "current") == [below]
    assert "(current)" in labels[below]
    assert "(current)" not in labels[head] and "(head)" in labels[head]
    assert f"is at {below}" in proc.stderr


def test_an_unreachable_database_still_gets_the_graph(repo, head_db):
    url = head_db.set(host="127.0.0.1", port=1, query={}, password="Hidd3n")

    proc = graph(repo, url)

    assert proc.returncode == 0, proc.stderr
    assert set(SHIPPED) <= set(nodes(proc.stdout))
    assert "cannot reach the database" in proc.stderr
    assert "no current revision" in proc.stderr
    assert "(current)" not in proc.stdout
    assert "Hidd3n" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(("name", "fenced"), [("graph.mmd", False), ("history.md", True)])
def test_output_writes_a_file(repo, tmp_path, name, fenced):
    out = tmp_path / name

    proc = graph(repo, None, "--output", str(out))

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    text = out.read_text()
    assert text.startswith("```mermaid\nflowchart TD\n") == fenced
    assert text.rstrip().endswith("```") == fenced
    assert "flowchart TD" in text and set(SHIPPED) <= set(nodes(text))


def test_labels_escape_quotes_and_markup():
    node = Node(revision="abc123", message='say "hi" <b>now</b>', parents=(),
                dependencies=(), branch_labels=(), is_head=True)

    chart = render_mermaid([node])

    assert 'rev_abc123["abc123 (head)<br/>say #quot;hi#quot; #lt;b#gt;now#lt;/b#gt;"]' in chart


def test_without_database_url_it_marks_the_embedded_databases_revision(repo):
    # Arrange: the checkout's embedded development database, two revisions below head.
    below = revisions()[-3]
    migrated = subprocess.run(["flask", "db", "upgrade", below], cwd=repo, env=child_env(None),
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr

    # Act: no DATABASE_URL, as for every development command.
    proc = graph(repo)

    # Assert
    assert proc.returncode == 0, proc.stderr
    assert classed(proc.stdout, "current") == [below]
    assert f"the embedded development database is at {below}" in proc.stderr
