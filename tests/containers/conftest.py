"""The container suite: what a user types, on a real Docker engine (helpers in
testkit.containers). Run by ``make test-containers``, not by ``make test``."""

from __future__ import annotations

import pytest

from testkit.containers import Project, copy_for_containers


@pytest.fixture
def project(tmp_path):
    """The production stack (docker-compose.yml alone) on a repository copy."""
    made = Project(copy_for_containers(tmp_path / "repo"), production=True)
    yield made
    made.down()


@pytest.fixture
def dev_project(tmp_path):
    """The development stack: docker-compose.yml with the override, source bind-mounted."""
    made = Project(copy_for_containers(tmp_path / "repo"), production=False)
    yield made
    made.down()


