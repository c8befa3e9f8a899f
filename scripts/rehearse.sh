#!/usr/bin/env bash
# Rehearse the pending migrations on a scratch copy of a real database:
#   scripts/rehearse.sh --from-url URL [--target-url URL] [--report FILE] [--json FILE|-]
#   scripts/rehearse.sh --from-dump FILE --target-url URL [...]
# Copies the source (pg_dump -Fc of a live database, which is only read, or a dump from
# scripts/backup.sh) into a new database on the target server and rehearses the deploy's
# order: each pending pre-deploy revision one at a time through migrations/env.py, then
# the background migrations they registered, run to their end with the real runner, then
# each pending post-deploy revision; it rolls them back the same way, newest first, and
# applies them again. It prints a markdown report, one section per phase: times,
# rewritten tables, the strongest lock per table, row counts, each background migration's
# rows, and whether the schema at the heads matches the models. The scratch database is
# dropped at the end, also on failure or Ctrl-C. Exit 0: passed; 1: a step or a background
# migration failed, rows were lost, the downgrades did not restore the schema or the
# models do not match; 2: could not rehearse. `scripts/rehearse.sh --help` lists every
# option.
set -euo pipefail

# Relative --report/--json/--from-dump paths are the caller's, not the repository root's.
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

exec python -m migration_tools.rehearse "$@"
