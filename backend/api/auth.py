"""Who is asking: the bearer token every /api request carries, but signing up.

A token is 256 random bits, so a plain SHA-256 of it is as safe to store as a slow password
hash (there is nothing to guess from) and lets the database find its user through a unique
index in one lookup. Only the digest is stored: a copy of the table lets nobody in.
"""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from flask import abort, g, request

from backend.extensions import db
from backend.models import User

# The endpoints a client without a token may call: signing up, which hands out the token.
PUBLIC_ENDPOINTS = frozenset({"api.create_user"})
# token_urlsafe(32) is 43 characters; anything much longer is not one of ours, and is not
# worth hashing.
MAX_TOKEN_LENGTH = 128


def new_token() -> tuple[str, str]:
    """A fresh token and the digest to store: the token goes to its user once, and only then."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def current_user_id() -> int:
    """The id of the user whose token this request carries (set by :func:`authenticate`)."""
    return g.user_id


def _unauthorized(message: str) -> None:
    abort(401, description=message)


def authenticate() -> None:
    """Refuse a request without a valid token, before any view runs.

    The same 401 answers a missing, malformed and unknown token alike, apart from its
    message: which tokens exist is not something a client learns by asking.
    """
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        _unauthorized("send Authorization: Bearer <token> (POST /api/users gives one)")
    user_id = None
    if len(token) <= MAX_TOKEN_LENGTH and token.isascii():
        user_id = db.session.scalar(sa.select(User.id).where(User.token_hash == digest(token)))
    if user_id is None:
        _unauthorized("invalid token")
    g.user_id = user_id
