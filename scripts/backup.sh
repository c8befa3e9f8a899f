#!/usr/bin/env bash
# Dump the database now, the same way as before a migration:
#   scripts/backup.sh [--dir DIR]
# Writes <UTC time>_<revision>_to_<revision>.dump (pg_dump -Fc, mode 0600) into DIR
# (default: BACKUP_DIR, else backups/), keeps the newest BACKUP_KEEP (default 5) dumps,
# and prints the new file's path on stdout. Without DATABASE_URL it dumps the embedded
# development database.
set -euo pipefail

usage='usage: scripts/backup.sh [--dir DIR]'
dir=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --dir) [ "$#" -ge 2 ] || { echo "backup: --dir needs a directory. $usage" >&2; exit 2; }
               dir="$2"; shift 2 ;;
        --dir=*) dir="${1#--dir=}"; shift ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) echo "backup: unexpected argument '$1'. $usage" >&2; exit 2 ;;
    esac
done
# A relative DIR means relative to where the user stands, not to the repository root.
if [ -n "$dir" ] && [ "${dir#/}" = "$dir" ]; then
    dir="$PWD/$dir"
fi

# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

args=(migrations backup)
if [ -n "$dir" ]; then
    args+=(--dir "$dir")
fi
echo "backup: dumping the database (pg_dump -Fc) into ${dir:-${BACKUP_DIR:-backups/}}" >&2
exec flask "${args[@]}"
