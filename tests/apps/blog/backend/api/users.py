"""Users and followers."""

from __future__ import annotations

from flask import Response, jsonify

from backend.api import api, body, commit_or_409, get_or_404, text
from backend.extensions import db
from backend.models import User


@api.post("/users")
def create_user() -> tuple[Response, int]:
    data = body()
    user = User(username=text(data, "username", 64), email=text(data, "email", 120),
                about_me=text(data, "about_me", 140, required=False))
    db.session.add(user)
    commit_or_409("a user with that username or email")
    return jsonify(user.to_dict()), 201


@api.get("/users/<int:user_id>")
def get_user(user_id: int) -> Response:
    return jsonify(get_or_404(User, user_id, "user").to_dict())


@api.post("/users/<int:user_id>/followers")
def follow(user_id: int) -> tuple[Response, int]:
    user = get_or_404(User, user_id, "user")
    follower = get_or_404(User, body().get("follower_id"), "user")
    user.followers.add(follower)
    commit_or_409(f"user {follower.id} following {user.id}")
    return jsonify(user.to_dict()), 201
