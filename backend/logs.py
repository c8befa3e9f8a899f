"""One line per event, in text or JSON, with any password in a URL masked.

Configured once per process; the migration environment and the web app share it, so a
line looks the same whether it came from the entrypoint, ``flask db`` or gunicorn.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_PASSWORD_IN_URL = re.compile(r"(?P<head>://[^:/@\s]*:)(?P<password>[^@\s]+)@")
_PASSWORD_KV = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>'[^']*'|\S+)", re.I)


def mask_secrets(text: str) -> str:
    """Replace passwords in URLs and ``password=...`` pairs with ``***``.

    Every log line passes here, an access-log line per request among them: two substring
    tests first (a fraction of a microsecond) keep the regular expressions (microseconds) for the
    rare line that could hold a secret."""
    if "://" in text:
        text = _PASSWORD_IN_URL.sub(r"\g<head>***@", text)
    if "password" in text.lower():
        text = _PASSWORD_KV.sub(r"\g<head>***", text)
    return text


_NOISE = ("Context impl ", "Will assume ")


def _not_noise(record: logging.LogRecord) -> bool:
    """Alembic's two set-up lines say nothing a reader of the deploy log needs."""
    return not (record.name == "alembic.runtime.migration" and str(record.msg).startswith(_NOISE))


class MaskingFormatter(logging.Formatter):
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class JsonFormatter(MaskingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = mask_secrets(self.formatException(record.exc_info).splitlines()[-1])
        return json.dumps(entry, default=str)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every log line to stderr in the chosen format. Safe to call more than once."""
    root = logging.getLogger()
    if getattr(root, "_service_configured", None) == log_format:
        return
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(MaskingFormatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
        ))
    handler.addFilter(_not_noise)
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("backend", "alembic", "flask_migrate"):
        logging.getLogger(name).setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    root._service_configured = log_format  # type: ignore[attr-defined]
