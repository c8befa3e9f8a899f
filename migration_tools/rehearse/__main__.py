"""``python -m migration_tools.rehearse`` (scripts/rehearse.sh)."""

import sys

from migration_tools.rehearse.cli import main

sys.exit(main())
