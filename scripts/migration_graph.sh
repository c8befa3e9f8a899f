#!/usr/bin/env bash
# Print the migration history as a Mermaid flowchart (paste it in a README, an issue or
# https://mermaid.live):
#   scripts/migration_graph.sh                  # to stdout
#   scripts/migration_graph.sh --output FILE    # to FILE (.md gets a ```mermaid fence)
# Every revision is a node (id and message), every parent an edge into its child, so a
# fork and a merge show as such; heads are marked "(head)". Post-deploy revisions are
# marked "[post-deploy]", their depends_on edges dotted; one head per phase is the normal
# shape, several heads within a phase are marked "(to merge)" and named on stderr with the
# refusal every deploy command gives. When DATABASE_URL reaches a
# database, its revision is marked "(current)"; otherwise the graph comes without it and
# stderr says why. A database revision these files lack (another branch's, after a git
# switch) is named on stderr with the branch that has its file.
set -euo pipefail
# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

echo "migration_graph: reading the revisions in migrations/versions/" >&2
exec python -m migration_tools.graph "$@"
