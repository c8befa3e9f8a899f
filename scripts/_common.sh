# Shared by the scripts in this folder: run from the repository root, with the
# project's .venv first on PATH when it exists (so nothing needs activating).
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The caller's own PATH, before ours: a command we suggest must work in their shell.
CALLER_PATH="${CALLER_PATH:-$PATH}"
export CALLER_PATH
cd "$REPO_ROOT" || exit 1
if [ -x "$REPO_ROOT/.venv/bin/python" ]; then
    PATH="$REPO_ROOT/.venv/bin:$PATH"
fi
export PATH
