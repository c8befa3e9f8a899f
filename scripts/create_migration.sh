#!/usr/bin/env bash
# Create one migration from the changes in backend/models/:
#   scripts/create_migration.sh "what changed"                 # on the main line (pre-deploy)
#   scripts/create_migration.sh --post-deploy "what changed"   # a contract step, post-deploy
# Prints the new file under migrations/versions/ and a summary of its operations, then lints
# it (warnings only). A main-line revision that drops, renames or makes a column NOT NULL
# gets one more line: the commands that move it to the post-deploy phase instead.
# Refuses, leaving no file behind, on an empty message, no model change, a database that is
# not at every head (a DATABASE_URL one: it names the commands to run; the embedded
# development database is brought there, its pending background migrations run first), or
# several heads in one phase. The database is read only to diff the models against it; one
# at another branch's revision (after a git switch) gets the branch that has it and the
# ways out.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

words=""
phase="main line, pre-deploy"
for arg in "$@"; do
    case "$arg" in
        --post-deploy) phase="post-deploy branch" ;;
        -h|--help) exec python -m migration_tools.create --help ;;
        *) words+="$arg" ;;
    esac
done
if [ -z "${words// /}" ]; then
    echo 'create_migration: a message is required. usage: scripts/create_migration.sh [--post-deploy] "what changed"' >&2
    exit 2
fi

revision_file="$(mktemp)"
trap 'rm -f "$revision_file"' EXIT
echo "create_migration: comparing backend/models/ with the database (a revision on the $phase)" >&2
python -m migration_tools.create --revision-file "$revision_file" "$@"
revision="$(cat "$revision_file")"
# By id: with a post-deploy branch the history has two heads, and `head` names one only.
echo "create_migration: linting the new revision $revision (warnings only; CI fails on them)" >&2
python -m migration_tools.lint --warn-only "$revision" >&2
