# Shared by the scripts in this folder: run from the repository root, with the
# project's .venv first on PATH when it exists (so nothing needs activating).
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 1
if [ -x "$REPO_ROOT/.venv/bin/python" ]; then
    PATH="$REPO_ROOT/.venv/bin:$PATH"
fi
export PATH
