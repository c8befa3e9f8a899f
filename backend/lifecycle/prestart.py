"""What the entrypoint runs before gunicorn: wait for the database, then migrate.

One process does both, so the interpreter and the app are loaded once. Any reason to
refuse ends here with one log line and a non-zero exit; gunicorn then never starts.
"""

from __future__ import annotations

import logging
import os
import sys

from backend.config import Config, ConfigError
from backend.lifecycle import LifecycleError
from backend.logs import configure_logging

log = logging.getLogger("backend.lifecycle")


def main() -> int:
    configure_logging("json" if os.environ.get("LOG_FORMAT", "").lower() == "json" else "text")
    try:
        config = Config.from_env()
        from backend.lifecycle.backup import backup_settings

        backup_settings()  # a bad BACKUP_* value fails now, not just before a migration
        from backend.lifecycle.database import wait_for_database

        wait_for_database(config.database_url, config.db_wait_timeout)

        from backend import create_app
        from backend.lifecycle.upgrade import upgrade_to_head

        app = create_app(config)
        with app.app_context():
            upgrade_to_head(app)
    except (ConfigError, LifecycleError) as exc:
        log.error("refusing to start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
