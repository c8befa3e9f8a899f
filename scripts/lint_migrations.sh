#!/usr/bin/env bash
# Lint the SQL of the migration revisions with squawk (settings in .squawk.toml):
#   scripts/lint_migrations.sh [--warn-only] [REV...]
# Each revision is rendered offline, as `flask db upgrade --sql` prints it (no database
# needed); each finding names the revision file, its id and its message. Exits 1 when a
# finding remains (0 with --warn-only), 2 when the lint cannot run.
# To silence one rule in one revision, add a comment to its file (the reason is required):
#   # squawk-ignore: <rule-name> <why it is safe here>
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

exec python -m migration_tools.lint "$@"
