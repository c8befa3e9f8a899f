#!/usr/bin/env bash
# Create one migration from the changes in backend/models/:
#   scripts/create_migration.sh "what changed"
# Prints the new file under migrations/versions/ and a summary of its operations.
# Refuses, leaving no file behind, on an empty message, no model change, a database
# that is not at head, or a revision history with several heads. The database is read only
# to diff the models against it; one at another branch's revision (after a git switch)
# gets the branch that has it and the ways out.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

if [ "$#" -eq 0 ] || [ -z "${*// /}" ]; then
    echo 'create_migration: a message is required. usage: scripts/create_migration.sh "what changed"' >&2
    exit 2
fi

echo "create_migration: comparing backend/models/ with the database" >&2
python -m migration_tools.create "$@"
# The new revision is the only head (several heads were refused above).
echo "create_migration: linting the new revision (warnings only; CI fails on them)" >&2
python -m migration_tools.lint --warn-only head >&2
