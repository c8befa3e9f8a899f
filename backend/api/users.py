"""Users: signing up (the one request that needs no token) and reading oneself.

No endpoint lists users or shows anyone else: an email address is its owner's business.
"""

from __future__ import annotations

from flask import Response, abort, jsonify, url_for

from backend.api import api, commit, created
from backend.api.auth import current_user_id, new_token
from backend.api.validation import email_value, json_object, text_value
from backend.extensions import db
from backend.models import User

EMAIL_MAX = User.__table__.c.email.type.length
NAME_MAX = User.__table__.c.name.type.length


@api.post("/users")
def create_user() -> tuple[Response, int, dict[str, str]]:
    body = json_object(required=("email", "name"))
    token, token_hash = new_token()
    user = User(email=email_value(body["email"], "email", EMAIL_MAX),
                name=text_value(body["name"], "name", NAME_MAX), token_hash=token_hash)
    db.session.add(user)
    # The unique index decides, not a lookup first: two concurrent requests both pass a lookup.
    commit(conflict=f"a user with email {user.email} already exists")
    # The only time the token is shown: the database keeps its digest alone.
    return created({**user.to_dict(), "token": token},
                   url_for("api.get_user", user_id=user.id))


def _me() -> User:
    return db.session.get(User, current_user_id())


@api.get("/users/me")
def get_me() -> Response:
    return jsonify(_me().to_dict())


@api.get("/users/<int:user_id>")
def get_user(user_id: int) -> Response:
    """Oneself by id; anyone else's id answers 404, as an id nobody has does."""
    if user_id != current_user_id():
        abort(404, description=f"user {user_id} not found")
    return jsonify(_me().to_dict())


@api.post("/users/me/token")
def rotate_token() -> Response:
    """A new token for oneself; the one this request carried stops working at once."""
    user = _me()
    token, user.token_hash = new_token()
    commit()
    return jsonify({**user.to_dict(), "token": token})
