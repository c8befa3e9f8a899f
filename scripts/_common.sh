# Shared by the scripts in this folder: run from the repository root, with the
# project's .venv first on PATH when it exists (so nothing needs activating).
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The caller's own PATH and directory, before ours: a command we suggest must work in their
# shell, and a relative path they give is relative to where they stand.
CALLER_PATH="${CALLER_PATH:-$PATH}"
CALLER_DIR="${CALLER_DIR:-$PWD}"
export CALLER_PATH CALLER_DIR
cd "$REPO_ROOT" || exit 1
if [ -x "$REPO_ROOT/.venv/bin/python" ]; then
    PATH="$REPO_ROOT/.venv/bin:$PATH"
fi
export PATH
