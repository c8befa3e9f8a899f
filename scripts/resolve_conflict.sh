#!/usr/bin/env bash
# Get back to one migration head when two branches each added a revision on the same
# parent (the entrypoint, /readyz and create_migration.sh all refuse two heads). Beside a
# post-deploy branch, one head per phase is normal: only the phase with several heads is
# resolved (merged by id), never a pre-deploy head with the post-deploy one:
#   scripts/resolve_conflict.sh                    # show the heads and both ways out
#   scripts/resolve_conflict.sh merge [-m MESSAGE] # flask db merge <the heads>, then upgrade
#   scripts/resolve_conflict.sh rebase [--keep REV]
#       roll the newer head back (if the database has it), re-parent its file onto the
#       other head, then flask db upgrade; --keep REV keeps REV and moves the other one
# Works on DATABASE_URL, or the embedded development database when it is unset. A
# database that is not on this machine is refused unless --force is given. merge needs
# only the files: a database that does not answer, or sits at another branch's revision
# (after a git switch), keeps its state and gets a note with the ways out.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

for arg in "$@"; do
    case "$arg" in
        merge|rebase)
            echo "resolve_conflict: $arg: reading the heads in migrations/versions/" >&2
            break ;;
    esac
done
exec python -m migration_tools.conflicts "$@"
