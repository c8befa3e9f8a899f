"""The lifecycle's own tables, in the application's database but never part of its schema:
autogenerate does not compare them with the models (migrations/env.py), and the schema
fingerprint, the verifier and the harness leave them out of what a revision must undo."""

from backend.migrate import background, checksums

TABLES = ("alembic_version", checksums.TABLE, background.TABLE)
