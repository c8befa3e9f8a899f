"""Checks on request bodies and query strings.

Every check fails with a 400 whose description is one line a client can act on. Input is
checked in full here, before the database sees it, because PostgreSQL rejects some values
(NUL characters, integers past BIGINT) with driver errors that would otherwise be a 500.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import date
from typing import Any, NoReturn

from flask import abort, request

from backend.models import TASK_STATUSES

MAX_ID = 2**63 - 1  # the largest BIGINT: no row can have an id beyond it
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100

_DIGITS = re.compile(r"[0-9]+")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def bad_request(message: str) -> NoReturn:
    abort(400, description=message)


def require_json_body() -> None:
    """A request that sends a body must say it is JSON, or it is refused with a 415 (a POST
    with no body, such as a token's renewal, needs no type).

    The parser below would read any body as JSON, and a browser sends text/plain,
    form-encoded and multipart bodies to another site without asking it first, so any page
    could post here from its visitors' browsers. A JSON body needs a CORS preflight, which
    this API never grants.
    """
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if (request.content_length or chunked) and request.mimetype != "application/json":
        abort(415, description="request body must be JSON (Content-Type: application/json)")


def _parse_json() -> Any:
    """The body parsed, or a 400.

    ``json.loads`` raises RecursionError, not ValueError, on deeply nested input, which
    Flask's ``get_json(silent=True)`` would let through as a 500.
    """
    try:
        # Already read, within BODY_TIMEOUT, by backend.serving.body.
        return json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError):
        bad_request("request body must be a JSON object")


def _shown(name: str, limit: int = 40) -> str:
    """A client's field name in an error message: short, never the whole of a huge body."""
    return name if len(name) <= limit else name[:limit] + "..."


def json_object(required: Iterable[str] = (), optional: Iterable[str] = ()) -> dict[str, Any]:
    """The body as a dict, rejecting unknown fields so a typo is never silently ignored."""
    body = _parse_json()
    if not isinstance(body, dict):
        bad_request("request body must be a JSON object")
    required = set(required)
    unknown = sorted(set(body) - required - set(optional))
    if unknown:
        names = ", ".join(_shown(name) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        bad_request(f"unknown field(s): {names}{more}")
    missing = sorted(required - set(body))
    if missing:
        bad_request(f"missing required field(s): {', '.join(missing)}")
    return body


def id_value(value: Any, name: str) -> int:
    # bool is a subclass of int, but `true` is never meant as an id.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        bad_request(f"{name} must be a positive integer")
    return value


def text_value(value: Any, name: str, max_length: int) -> str:
    """Stripped text: surrounding blanks are never intended and would defeat the empty check."""
    if not isinstance(value, str):
        bad_request(f"{name} must be a string")
    value = value.strip()
    if not value:
        bad_request(f"{name} must not be empty")
    if len(value) > max_length:
        bad_request(f"{name} must be at most {max_length} characters")
    if "\x00" in value:
        bad_request(f"{name} must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800": JSON allows it
            bad_request(f"{name} must be valid Unicode text (no lone surrogates)")
    return value


def email_value(value: Any, name: str, max_length: int) -> str:
    """Only the shape is checked; whether the address works is the mail server's business."""
    value = text_value(value, name, max_length)
    local, _, domain = value.rpartition("@")
    if not local or not domain or any(ch.isspace() for ch in value):
        bad_request(f"{name} must be an email address")
    return value


def status_value(value: Any, name: str = "status") -> str:
    if not isinstance(value, str) or value not in TASK_STATUSES:
        bad_request(f"{name} must be one of: {', '.join(TASK_STATUSES)}")
    return value


def date_value(value: Any, name: str) -> date | None:
    """None clears the date; only the plain YYYY-MM-DD form is accepted, not every ISO form."""
    if value is None:
        return None
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    bad_request(f"{name} must be a date as YYYY-MM-DD")


def query_int(name: str, default: int | None = None, maximum: int = MAX_ID) -> int | None:
    """A positive integer from the query string; int() alone would accept ' 1', '+1' and '1_0'."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw) if _DIGITS.fullmatch(raw) else 0
    except ValueError:  # more digits than Python converts
        value = 0
    if not 1 <= value <= maximum:
        bad_request(f"{name} must be an integer from 1 to {maximum}")
    return value


def query_status(name: str = "status") -> str | None:
    raw = request.args.get(name)
    return None if raw is None else status_value(raw, name)


def page_args() -> tuple[int, int]:
    """(page, per_page); per_page is capped so one request cannot pull a whole table."""
    page = query_int("page", 1)
    per_page = query_int("per_page", DEFAULT_PER_PAGE, maximum=MAX_PER_PAGE)
    return page, per_page
