"""The README's examples, run as printed on a repository copy, so the text cannot drift."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.conftest import child_env
from tests.support import ROOT, copy_repository

README = (ROOT / "README.md").read_text()
TITLE_LINE = "    title: Mapped[str] = mapped_column(sa.String(500))\n"


def test_the_data_file_example_passes_for_the_revision_it_describes(tmp_path):
    # Arrange: the change the example describes: tasks.notes, filled with '' for old rows.
    repo = copy_repository(tmp_path / "repo")
    shutil.copytree(ROOT / "tests", repo / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "containers"))
    model = repo / "backend/models/task.py"
    model.write_text(model.read_text().replace(
        TITLE_LINE, TITLE_LINE + "    notes: Mapped[str | None] = mapped_column(sa.Text)\n"))
    created = subprocess.run([str(repo / "scripts/create_migration.sh"), "add notes to tasks"],
                             cwd=repo, env=child_env(None), capture_output=True, text=True,
                             timeout=300)
    assert created.returncode == 0, created.stderr
    path = repo / re.search(r"^(migrations/versions/\S+\.py)$", created.stdout, re.M).group(1)
    revision = re.search(r"Revision ID: (\w+)", path.read_text()).group(1)
    path.write_text(path.read_text().replace(
        "    # ### end Alembic commands ###\n\n\ndef downgrade",
        "    # ### end Alembic commands ###\n"
        "    op.execute(\"UPDATE tasks SET notes = '' WHERE notes IS NULL\")\n\n\ndef downgrade",
        1))
    example = re.search(r"`tests/migrations/data/<its revision id>.py`:\n\n```python\n(.*?)```",
                        README, re.S).group(1)
    (repo / f"tests/migrations/data/{revision}.py").write_text(example)

    # Act: the migration suite's tests for that revision, in the copy.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/migrations", "-k", revision], cwd=repo, env=child_env(None),
                          capture_output=True, text=True, timeout=600)

    # Assert
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"\b[1-9]\d* passed", proc.stdout)
    assert "UPDATE tasks SET notes" in path.read_text()
