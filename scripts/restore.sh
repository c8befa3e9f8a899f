#!/usr/bin/env bash
# Replace the contents of the database in DATABASE_URL (without it: the embedded
# development database, as scripts/backup.sh) with a dump:
#   scripts/restore.sh FILE --yes
# pg_restore --clean --if-exists --no-owner --single-transaction: all or nothing. Without
# --yes it only says what it would do. Stop the service first: the restore locks every
# table it replaces. Tables created after the dump was taken are left in place (named in
# a warning).
set -euo pipefail

usage='usage: scripts/restore.sh FILE --yes'
file=""
yes=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --yes) yes="--yes"; shift ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) echo "restore: unexpected option '$1'. $usage" >&2; exit 2 ;;
        *) if [ -n "$file" ]; then
               echo "restore: one file at a time, got '$file' and '$1'. $usage" >&2; exit 2
           fi
           file="$1"; shift ;;
    esac
done
if [ -z "$file" ]; then
    echo "restore: which dump? $usage" >&2
    exit 2
fi
# A relative FILE means relative to where the user stands, not to the repository root.
if [ "${file#/}" = "$file" ]; then
    file="$PWD/$file"
fi
if [ ! -f "$file" ]; then
    echo "restore: no such file: $file" >&2
    exit 2
fi
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

if [ -n "$yes" ]; then
    target="the embedded development database"
    if [ -n "${DATABASE_URL:-}" ]; then target="the database in DATABASE_URL"; fi
    echo "restore: restoring $file into $target (pg_restore --clean --single-transaction)" >&2
    exec flask migrations restore "$file" --yes
fi
exec flask migrations restore "$file"
