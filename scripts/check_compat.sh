#!/usr/bin/env bash
# Does the previous release still work on the schema this checkout's revisions make?
#   scripts/check_compat.sh [--against REF] [--tests PATH]... [-v]
# Runs REF's tests (default REF: the newest tag, else the previous commit; default tests:
# $COMPAT_TESTS, space-separated paths, else tests/api) against a database migrated with
# this checkout's migrations/versions/ as a rolling deploy leaves it while REF serves: the
# pre-deploy revisions and REF's own post-deploy ones, not this checkout's new post-deploy
# revisions (they run once REF is gone). Exit 0: compatible; 1: REF's tests ran and fail on
# the new schema (named, with the new revisions); 2: could not check (REF unknown, its
# tests do not collect or import, none found or all skipped).
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

exec python -m migration_tools.compat "$@"
