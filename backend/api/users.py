"""Users: created and read; nothing here changes or removes them."""

from __future__ import annotations

from flask import Response, jsonify, url_for

from backend.api import api, commit, created, get_or_404, list_page
from backend.api.validation import email_value, json_object, text_value
from backend.extensions import db
from backend.models import User

EMAIL_MAX = User.__table__.c.email.type.length
NAME_MAX = User.__table__.c.name.type.length


@api.post("/users")
def create_user() -> tuple[Response, int, dict[str, str]]:
    body = json_object(required=("email", "name"))
    user = User(email=email_value(body["email"], "email", EMAIL_MAX),
                name=text_value(body["name"], "name", NAME_MAX))
    db.session.add(user)
    # The unique index decides, not a lookup first: two concurrent requests both pass a lookup.
    commit(conflict=f"a user with email {user.email} already exists")
    return created(user.to_dict(), url_for("api.get_user", user_id=user.id))


@api.get("/users")
def list_users() -> Response:
    return list_page(db.select(User).order_by(User.id), User.to_dict)


@api.get("/users/<int:user_id>")
def get_user(user_id: int) -> Response:
    return jsonify(get_or_404(User, user_id).to_dict())
