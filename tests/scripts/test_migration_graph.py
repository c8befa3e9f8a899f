"""scripts/migration_graph.sh: the revision history as Mermaid, heads and current marked.

Each test draws a copy of the project serving the fixture application, with the branches
and merges it needs written into that copy, so the proof holds whatever history the
checkout ships. A copy with a post-deploy branch (testkit.harness.add_post_deploy_branch)
proves the two phases: post-deploy revisions marked, their depends_on edges drawn, the
normal two heads not flagged, and several heads within one phase flagged.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from migration_tools.graph import Node, render_mermaid
from testkit.harness import (
    NEXT_CONTRACT,
    NEXT_EXPAND,
    POST_CONTRACT,
    POST_EXPAND,
    add_post_deploy_branch,
)
from testkit.support import FIXTURE_REVISIONS, fixture_project, revisions, write_revision
from tests.conftest import child_env, execute_sql, run_flask

NODE = re.compile(r'^\s+rev_(\w+)\["(.*)"\]$', re.M)
EDGE = re.compile(r"^\s+rev_(\w+) --> rev_(\w+)$", re.M)
DEPENDS = re.compile(r"^\s+rev_(\w+) -\.->\|depends on\| rev_(\w+)$", re.M)
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


@pytest.fixture
def repo(tmp_path) -> Path:
    return fixture_project(tmp_path / "repo")


def test_the_history_has_every_revision_and_one_head(repo):
    # Arrange: the fixture's history and one more revision on it, as a team's grows.
    write_revision(repo, "gr0000000001", FIXTURE_REVISIONS[-1], "add widget tags")

    # Act
    proc = graph(repo)

    # Assert
    assert proc.returncode == 0, proc.stderr
    chart = proc.stdout
    assert chart.splitlines()[0] == "flowchart TD"
    scripts = ScriptDirectory(str(repo / "migrations"))
    every = {s.revision for s in scripts.walk_revisions()}
    labels = nodes(chart)
    assert set(labels) == every == {*FIXTURE_REVISIONS, "gr0000000001"}
    for script in scripts.walk_revisions():
        assert script.doc in labels[script.revision]
        if script.down_revision:
            assert (script.down_revision, script.revision) in edges(chart)
    [head] = scripts.get_heads()
    assert head == "gr0000000001"
    assert classed(chart, "head") == [head]
    assert [rev for rev, label in labels.items() if "(head)" in label] == [head]
    assert "(current)" not in chart and classed(chart, "current") == []
    assert "DATABASE_URL is not set" in proc.stderr


def test_a_merge_shows_both_parents_as_edges_into_it(repo):
    # Arrange: two branches on the head, then a merge revision joining them.
    [parent] = ScriptDirectory(str(repo / "migrations")).get_heads()
    write_revision(repo, "aaaa00000001", parent, "branch a", stamp="20261120_1200")
    write_revision(repo, "bbbb00000002", parent, "branch b", stamp="20261120_1300")
    write_revision(repo, "cccc00000003", ("aaaa00000001", "bbbb00000002"), "merge a and b",
                   stamp="20261121_0900")

    # Act
    proc = graph(repo)

    # Assert
    assert proc.returncode == 0, proc.stderr
    chart = proc.stdout
    assert {(parent, "aaaa00000001"), (parent, "bbbb00000002"),
            ("aaaa00000001", "cccc00000003"), ("bbbb00000002", "cccc00000003")} <= edges(chart)
    assert classed(chart, "head") == ["cccc00000003"]
    assert "merge a and b" in nodes(chart)["cccc00000003"]


def test_two_heads_are_both_marked_and_flagged(repo):
    [parent] = ScriptDirectory(str(repo / "migrations")).get_heads()
    for rev in ("aaaa00000001", "bbbb00000002"):
        write_revision(repo, rev, parent, f"branch {rev}", stamp="20261120_1200")

    proc = graph(repo)

    assert proc.returncode == 0, proc.stderr
    assert sorted(classed(proc.stdout, "head")) == ["aaaa00000001", "bbbb00000002"]
    assert sorted(classed(proc.stdout, "conflict")) == ["aaaa00000001", "bbbb00000002"]
    assert "2 head(s)" in proc.stderr
    assert ("the revision history has 2 heads (aaaa00000001, bbbb00000002): merge them with "
            '`flask db merge heads -m "merge heads"`') in proc.stderr


def test_the_database_revision_is_marked_current(repo, fixture_db):
    # Arrange: the database one revision behind head.
    [head] = ScriptDirectory(str(repo / "migrations")).get_heads()
    below = ScriptDirectory(str(repo / "migrations")).get_revision(head).down_revision
    run_flask(["db", "downgrade", below], fixture_db, cwd=repo)
    assert execute_sql(fixture_db, "SELECT version_num FROM alembic_version") == [(below,)]

    # Act
    proc = graph(repo, fixture_db)

    # Assert
    assert proc.returncode == 0, proc.stderr
    labels = nodes(proc.stdout)
    assert classed(proc.stdout, "current") == [below]
    assert "(current)" in labels[below]
    assert "(current)" not in labels[head] and "(head)" in labels[head]
    assert f"is at {below}" in proc.stderr


def test_an_unreachable_database_still_gets_the_graph(repo, fixture_db):
    url = fixture_db.set(host="127.0.0.1", port=1, query={}, password="Hidd3n")

    proc = graph(repo, url)

    assert proc.returncode == 0, proc.stderr
    assert set(FIXTURE_REVISIONS) <= set(nodes(proc.stdout))
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
    assert "flowchart TD" in text and set(FIXTURE_REVISIONS) <= set(nodes(text))


def test_labels_escape_quotes_and_markup():
    node = Node(revision="abc123", message='say "hi" <b>now</b>', parents=(),
                dependencies=(), branch_labels=(), is_head=True)

    chart = render_mermaid([node])

    assert 'rev_abc123["abc123 (head)<br/>say #quot;hi#quot; #lt;b#gt;now#lt;/b#gt;"]' in chart


def test_without_database_url_it_marks_the_embedded_databases_revision(repo):
    # Arrange: the checkout's embedded development database, two revisions below head.
    write_revision(repo, "gr0000000001", FIXTURE_REVISIONS[-1], "add widget tags")
    below = revisions(repo)[-3]
    migrated = subprocess.run(["flask", "db", "upgrade", below], cwd=repo, env=child_env(None),
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr

    # Act: no DATABASE_URL, as for every development command.
    proc = graph(repo)

    # Assert
    assert proc.returncode == 0, proc.stderr
    assert classed(proc.stdout, "current") == [below]
    assert f"the embedded development database is at {below}" in proc.stderr


def test_post_deploy_revisions_are_marked_and_one_head_per_phase_is_no_conflict(repo):
    # Arrange: release N+1 (expand, backfill, contract) and N+2 (an expand after it, and a
    # second contract after the first).
    add_post_deploy_branch(repo, next_release=True)

    # Act
    proc = graph(repo)

    # Assert
    assert proc.returncode == 0, proc.stderr
    chart, labels = proc.stdout, nodes(proc.stdout)
    assert sorted(classed(chart, "post")) == [POST_CONTRACT, NEXT_CONTRACT]
    assert [rev for rev, label in labels.items() if "[post-deploy]" in label] == [
        POST_CONTRACT, NEXT_CONTRACT]
    assert "[post]" not in chart  # the phase, said once
    assert {(POST_EXPAND, POST_CONTRACT), (NEXT_EXPAND, NEXT_CONTRACT)} <= set(
        DEPENDS.findall(chart))
    assert (POST_CONTRACT, NEXT_CONTRACT) in edges(chart)
    assert (POST_EXPAND, NEXT_EXPAND) in edges(chart)
    assert sorted(classed(chart, "head")) == [NEXT_EXPAND, NEXT_CONTRACT]
    assert classed(chart, "conflict") == [] and "(to merge)" not in chart
    assert (f"6 revision(s) (2 post-deploy), 2 head(s): {NEXT_EXPAND} (pre-deploy), "
            f"{NEXT_CONTRACT} (post-deploy)") in proc.stderr
    assert "merge" not in proc.stderr


def test_several_heads_in_the_post_deploy_phase_are_flagged(repo):
    add_post_deploy_branch(repo)
    for rev in ("cccc00000011", "cccc00000012"):
        write_revision(repo, rev, POST_CONTRACT, f"contract {rev}", stamp="20261212_1000",
                       depends_on=POST_EXPAND)

    proc = graph(repo)

    assert proc.returncode == 0, proc.stderr
    chart, labels = proc.stdout, nodes(proc.stdout)
    assert sorted(classed(chart, "conflict")) == ["cccc00000011", "cccc00000012"]
    assert sorted(rev for rev, label in labels.items() if "(to merge)" in label) == [
        "cccc00000011", "cccc00000012"]
    assert POST_EXPAND not in classed(chart, "conflict")  # the main line's head is fine
    assert ("the post-deploy revisions have 2 heads (cccc00000011, cccc00000012): merge them "
            "with `flask db merge cccc00000011 cccc00000012") in proc.stderr
