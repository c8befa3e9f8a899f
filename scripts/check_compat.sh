#!/usr/bin/env bash
# Does the previous release still work on the schema this checkout's revisions make?
#   scripts/check_compat.sh [--against REF] [-v]
# Runs REF's API tests (default REF: the newest tag, else the previous commit) against a
# database migrated with this checkout's migrations/versions/. Exit 0: compatible;
# 1: REF's tests fail (named, with the new revisions); 2: could not check.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

exec python -m migration_tools.compat "$@"
