"""``python -m migration_tools.verify`` (scripts/verify_migrations.sh)."""

import sys

from migration_tools.verify.cli import main

sys.exit(main())
