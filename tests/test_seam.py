"""The seam between the application and everything else: only backend/application.py
imports the application (its models and routes). The lifecycle, serving, the tools and the
test kit work on whatever db.metadata and migrations/versions hold, so a team can replace
the example (scripts/remove_example.sh) without touching them."""

from __future__ import annotations

import ast
from pathlib import Path

from testkit.support import ROOT

APPLICATION = ("backend.models", "backend.api")
# The application itself, and the one file that plugs it in.
ITS_OWN = ("backend/models/", "backend/api/", "backend/application.py")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def the_rest() -> list[Path]:
    files = [*ROOT.glob("*.py"), ROOT / "migrations/env.py"]
    for folder in ("backend", "migration_tools", "testkit", "bench"):
        files += (ROOT / folder).rglob("*.py")
    return [f for f in files if not str(f.relative_to(ROOT)).startswith(ITS_OWN)]


def test_nothing_but_the_seam_imports_the_application():
    # Arrange
    files = the_rest()

    # Act
    offenders = {str(f.relative_to(ROOT)): sorted(m for m in imported_modules(f)
                                                 if m.startswith(APPLICATION))
                 for f in files}

    # Assert
    assert len(files) > 50
    assert {f: m for f, m in offenders.items() if m} == {}


def test_the_seam_is_where_the_application_comes_in():
    assert imported_modules(ROOT / "backend/application.py") & {"backend.models",
                                                                "backend.api.api"}
