#!/usr/bin/env bash
# Back up the embedded development database, then rebuild it at this checkout's head:
#   scripts/reset_dev_database.sh
# The way out when the development database holds a revision of another branch (applied
# there, then `git switch`) and its rows do not matter. The dump (pg_dump -Fc, as
# scripts/backup.sh) goes to BACKUP_DIR/reset/ (default backups/reset/) first; then the
# database is dropped, created empty and upgraded to head. Refuses when DATABASE_URL is
# set: only the embedded development database (.data/postgres) is ever reset.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

exec python -m migration_tools.reset "$@"
