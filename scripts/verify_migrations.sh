#!/usr/bin/env bash
# Prove, fast, that every revision's downgrade undoes its upgrade:
#   scripts/verify_migrations.sh [--url URL | --server-url URL] [-v] [--no-models] [--no-data]
# Walks the history base -> heads, both phases (the main line, and each post-deploy revision
# after the revisions it depends on), on one connection of an EMPTY scratch database, the
# data files' rows (tests/migrations/data) put in before their revisions: for each
# revision, upgrade, downgrade (the schema must be the one before the upgrade) and upgrade
# again (the schema must be the one after the first upgrade); one head per phase; at the
# heads, the schema must match the models (as `flask db check`). The database is --url,
# else DATABASE_URL (refused unless empty; left at the heads), or a scratch database
# created on --server-url (or, with no URL at all, on the embedded development PostgreSQL)
# and dropped at the end.
# Exit 0: all good; 1: problems found, each naming its revision; 2: could not verify.
# `scripts/verify_migrations.sh --help` lists every option.
set -euo pipefail

# A relative --migrations path is the caller's, not the repository root's.
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

exec python -m migration_tools.verify "$@"
