"""Posts: a short body by one author, a draft until published (a PostgreSQL enum)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
import sqlalchemy.orm as so

from backend.extensions import db

if TYPE_CHECKING:
    from backend.models.user import User

POST_STATUSES = ("draft", "published")


class Post(db.Model):
    __tablename__ = "posts"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    body: so.Mapped[str] = so.mapped_column(sa.String(140))
    timestamp: so.Mapped[datetime] = so.mapped_column(
        sa.DateTime(timezone=True), index=True, server_default=sa.func.now())
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    status: so.Mapped[str] = so.mapped_column(
        sa.Enum(*POST_STATUSES, name="post_status"), server_default="published")

    author: so.Mapped[User] = so.relationship(back_populates="posts")

    def to_dict(self) -> dict:
        return {"id": self.id, "body": self.body, "user_id": self.user_id,
                "status": self.status, "timestamp": self.timestamp.isoformat()}
