"""Posts and their threaded comments."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response, abort, jsonify, request

from backend.api import api, body, get_or_404, text
from backend.extensions import db
from backend.models import POST_STATUSES, Comment, Post, User


@api.post("/posts")
def create_post() -> tuple[Response, int]:
    data = body()
    author = get_or_404(User, data.get("user_id"), "user")
    status = data.get("status", "published")
    if status not in POST_STATUSES:
        abort(400, description=f"status: one of {', '.join(POST_STATUSES)}")
    post = Post(body=text(data, "body", 140), author=author, status=status)
    db.session.add(post)
    db.session.commit()
    return jsonify(post.to_dict()), 201


@api.get("/posts")
def list_posts() -> Response:
    query = sa.select(Post).order_by(Post.timestamp.desc(), Post.id.desc()).limit(50)
    status = request.args.get("status")
    if status is not None:
        if status not in POST_STATUSES:
            abort(400, description=f"status: one of {', '.join(POST_STATUSES)}")
        query = query.where(Post.status == status)
    return jsonify(items=[post.to_dict() for post in db.session.scalars(query)])


@api.post("/posts/<int:post_id>/comments")
def create_comment(post_id: int) -> tuple[Response, int]:
    post = get_or_404(Post, post_id, "post")
    data = body()
    author = get_or_404(User, data.get("user_id"), "user")
    parent_id = data.get("parent_id")
    if parent_id is not None and get_or_404(Comment, parent_id, "comment").post_id != post.id:
        abort(400, description="parent_id: a comment on the same post is required")
    comment = Comment(post_id=post.id, user_id=author.id, parent_id=parent_id,
                      body=text(data, "body", 500))
    db.session.add(comment)
    db.session.commit()
    return jsonify(comment.to_dict()), 201


@api.get("/posts/<int:post_id>/comments")
def list_comments(post_id: int) -> Response:
    post = get_or_404(Post, post_id, "post")
    rows = db.session.scalars(sa.select(Comment).where(Comment.post_id == post.id)
                              .order_by(Comment.id))
    return jsonify(items=[comment.to_dict() for comment in rows])
