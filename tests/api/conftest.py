"""Fixtures of the API tests, on top of tests/conftest.py's ``app`` and ``client``."""

import pytest

from tests.api.support import sign_up


@pytest.fixture
def auth(client) -> dict[str, str]:
    """The headers of a user who has just signed up (Ada), for tests about one user's rows."""
    return sign_up(client)[1]
