"""``python -m migration_tools.conflicts`` (scripts/resolve_conflict.sh)."""

import sys

from migration_tools.conflicts.cli import main

sys.exit(main(sys.argv[1:]))
