#!/usr/bin/env bash
# Take the example application (a task tracker) out of the checkout, leaving the seam
# ready for yours (docs/adopting.md):
#   scripts/remove_example.sh
# Removes its models (backend/models/), its API (backend/api/), its history
# (migrations/versions/ and migrations/lint-baseline.txt, which speaks of those revisions),
# its migration data files (tests/migrations/data/<rev>.py) and its API tests (tests/api/); writes an empty backend/models/ and a backend/application.py that
# registers no routes. Everything else (settings, serving, health, the lifecycle, the tools
# and their tests) stays. Nothing touches a database. Run it once, before copying your app in.
set -euo pipefail

# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

for path in backend/api tests/api migrations/lint-baseline.txt; do
    if [ -e "$path" ]; then
        echo "remove_example: removing $path"
        rm -rf "$path"
    fi
done
echo "remove_example: removing backend/models/, migrations/versions/*.py and tests/migrations/data/<rev>.py"
rm -rf backend/models
mkdir -p backend/models migrations/versions
find migrations/versions -maxdepth 1 -name '*.py' -delete
if [ -d tests/migrations/data ]; then
    find tests/migrations/data -maxdepth 1 -name '*.py' ! -name '__init__.py' -delete
fi

cat > backend/models/__init__.py <<'PY'
"""Your models: import every one of them here, so that db.metadata (and autogenerate) sees
them all. Each is a ``db.Model`` subclass, with ``db`` from backend.extensions."""
PY

cat > backend/application.py <<'PY'
"""The seam: the one place the service meets the application it serves (docs/adopting.md)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the application's tables and routes on ``app``: import the models (that puts
    every table on ``db.metadata``), initialise the extensions they need, register the
    blueprints."""
    from backend import models  # noqa: F401  (registers every table)
PY
echo "remove_example: done; put your models in backend/models/, your blueprints in backend/application.py, your revisions in migrations/versions/"
