"""Users, and who follows whom (an association table on users, both ends)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
import sqlalchemy.orm as so

from backend.extensions import db

if TYPE_CHECKING:
    from backend.models.post import Post

followers = sa.Table(
    "followers",
    db.metadata,
    sa.Column("follower_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("followed_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
)


class User(db.Model):
    __tablename__ = "users"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    username: so.Mapped[str] = so.mapped_column(sa.String(64), index=True, unique=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(120), index=True, unique=True)
    about_me: so.Mapped[str | None] = so.mapped_column(sa.String(140))
    last_seen: so.Mapped[datetime | None] = so.mapped_column(sa.DateTime(timezone=True))
    created_at: so.Mapped[datetime] = so.mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now())

    posts: so.WriteOnlyMapped[Post] = so.relationship(back_populates="author")
    following: so.WriteOnlyMapped[User] = so.relationship(
        secondary=followers, primaryjoin=(followers.c.follower_id == id),
        secondaryjoin=(followers.c.followed_id == id), back_populates="followers")
    followers: so.WriteOnlyMapped[User] = so.relationship(
        secondary=followers, primaryjoin=(followers.c.followed_id == id),
        secondaryjoin=(followers.c.follower_id == id), back_populates="following")

    def follower_count(self) -> int:
        query = sa.select(sa.func.count()).select_from(self.followers.select().subquery())
        return db.session.scalar(query) or 0

    def to_dict(self) -> dict:
        return {"id": self.id, "username": self.username, "email": self.email,
                "about_me": self.about_me,
                "last_seen": self.last_seen.isoformat() if self.last_seen else None,
                "followers": self.follower_count()}
