"""The domain's JSON API, mounted under /api.

Every error under /api answers JSON, whether raised by a view or by Flask's routing, so a
client never has to parse an HTML error page. Every request but signing up carries a bearer
token (backend.api.auth), and a user reaches only their own rows: anyone else's answer 404,
exactly as rows that do not exist, so ids do not tell who has what.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, abort, jsonify, request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from backend.api.auth import authenticate
from backend.api.validation import MAX_ID, page_args, require_json_body
from backend.extensions import db

api = Blueprint("api", __name__, url_prefix="/api")

UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"


def json_error(exc: HTTPException) -> tuple[Response, int]:
    """Flask's stock descriptions are paragraphs for humans; a short name and path is clearer."""
    message = exc.description
    if not message or message == type(exc).description:
        message = f"{exc.name}: {request.method} {request.path}"
    response = jsonify(error=message)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    if exc.code == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if exc.code in (408, 413):  # the rest of the body is not worth reading: hang up after
        response.headers["Connection"] = "close"
    return response, exc.code or 500


def _under_api() -> bool:
    prefix = api.url_prefix or ""
    return request.path == prefix or request.path.startswith(prefix + "/")


def _routing_error(exc: HTTPException) -> HTTPException | tuple[Response, int]:
    """404 and 405 from URL matching happen before any blueprint is chosen, so only an
    app-wide handler sees them; it answers JSON for /api paths and leaves the rest alone."""
    return json_error(exc) if _under_api() else exc


def _headers(response: Response) -> Response:
    """On every /api answer, errors from routing included: a browser must not guess a JSON
    body is HTML (nosniff), and no cache, shared or the browser's, keeps a user's data."""
    if _under_api():
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
    return response


api.register_error_handler(HTTPException, json_error)
api.app_errorhandler(404)(_routing_error)
api.app_errorhandler(405)(_routing_error)
api.after_app_request(_headers)
# Who asks first, then what they sent: a client without a token learns nothing about its
# request (the serving layer has already read the body, within its size and time limits).
api.before_request(authenticate)
api.before_request(require_json_body)


def one_or_404(query: sa.Select, name: str, ident: int) -> Any:
    """The one row ``query`` finds for ``ident``, or a 404 naming it.

    An id past BIGINT cannot exist, and asking PostgreSQL about it would be a driver error.
    """
    row = db.session.scalar(query) if 1 <= ident <= MAX_ID else None
    if row is None:
        abort(404, description=f"{name} {ident} not found")
    return row


def commit(conflict: str = "conflicts with an existing row", missing: str = "not found") -> None:
    """Commit, turning the constraint violations a concurrent request can cause into 409/404.

    The checks before a write make these rare, but only the database sees every race.
    """
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        code = getattr(exc.orig, "pgcode", None)
        if code == UNIQUE_VIOLATION:
            abort(409, description=conflict)
        if code == FOREIGN_KEY_VIOLATION:
            abort(404, description=missing)
        raise


def list_page(query: sa.Select, to_dict: Callable[[Any], dict]) -> Response:
    """One page of ``query`` (already ordered), with the total so a client can page on."""
    page, per_page = page_args()
    counted = query.order_by(None).subquery()
    total = db.session.scalar(sa.select(sa.func.count()).select_from(counted))
    offset = (page - 1) * per_page
    # Past the end there is nothing to fetch, and a huge offset would overflow BIGINT.
    rows = db.session.scalars(query.limit(per_page).offset(offset)).all() if offset < total else []
    return jsonify(items=[to_dict(row) for row in rows], page=page, per_page=per_page, total=total)


def created(body: dict, location: str) -> tuple[Response, int, dict[str, str]]:
    return jsonify(body), 201, {"Location": location}


# The route modules attach their views to ``api`` when imported.
from backend.api import projects, tasks, users  # noqa: E402, F401
