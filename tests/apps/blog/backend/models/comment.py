"""Comments on posts; a reply names the comment it answers (a foreign key to its own
table)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from backend.extensions import db


class Comment(db.Model):
    __tablename__ = "comments"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    post_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    parent_id: so.Mapped[int | None] = so.mapped_column(
        sa.ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    body: so.Mapped[str] = so.mapped_column(sa.String(500))
    created_at: so.Mapped[datetime] = so.mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now())

    parent: so.Mapped[Comment | None] = so.relationship(remote_side=[id])

    def to_dict(self) -> dict:
        return {"id": self.id, "post_id": self.post_id, "user_id": self.user_id,
                "parent_id": self.parent_id, "body": self.body}
