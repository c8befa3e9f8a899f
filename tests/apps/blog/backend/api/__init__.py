"""The blog's JSON API under /api: one blueprint, the way a Flask-Migrate app usually
registers its routes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, jsonify, request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from backend.extensions import db

api = Blueprint("api", __name__, url_prefix="/api")
MAX_ID = 2**31 - 1  # the ids are INTEGER: a larger one cannot exist


@api.errorhandler(HTTPException)
def json_error(exc: HTTPException) -> tuple[Response, int]:
    """Clients of a JSON API read JSON errors, not Flask's HTML pages."""
    return jsonify(error=exc.description or exc.name), exc.code or 500


def body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, description="a JSON object is required")
    return data


def text(data: dict[str, Any], name: str, limit: int, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        abort(400, description=f"{name}: text of 1 to {limit} characters is required")
    return value.strip()


def get_or_404(model: type, ident: Any, name: str) -> Any:
    row = db.session.get(model, ident) if isinstance(ident, int) and 1 <= ident <= MAX_ID \
        else None
    if row is None:
        abort(404, description=f"{name} {ident} not found")
    return row


def commit_or_409(what: str) -> None:
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        abort(409, description=f"{what} already exists")


from backend.api import posts, users  # noqa: E402, F401  (registers the routes)
