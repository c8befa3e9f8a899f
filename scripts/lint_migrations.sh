#!/usr/bin/env bash
# Lint the SQL of the migration revisions with squawk (settings in .squawk.toml):
#   scripts/lint_migrations.sh [--warn-only] [REV...]
#   scripts/lint_migrations.sh --write-baseline "reason"
# Each revision is rendered offline, as `flask db upgrade --sql` prints it (no database
# needed); each finding names the revision file, its id and its message. Exits 1 when a
# finding remains or a baseline line is stale (0 with --warn-only), 2 when the lint cannot
# run (a malformed baseline line included).
# Post-deploy revisions are linted too. A contract step (a drop, a rename, SET NOT NULL) in a
# pre-deploy revision gets a hint naming the post-deploy phase; in a post-deploy one it does
# not. As a REV, head is the pre-deploy head and post@head the post-deploy one.
# To silence one rule in one revision, add a comment to its file (the reason is required):
#   # squawk-ignore: <rule-name> <why it is safe here>
# Revisions that can never be rewritten (the comment would change their checksum) have their
# findings accepted in migrations/lint-baseline.txt, one a line: <revision> <rule> <reason>.
# --write-baseline "reason" writes every current finding there, keeping existing reasons.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

exec python -m migration_tools.lint "$@"
