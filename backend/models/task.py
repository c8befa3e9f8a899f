"""Tasks: the work inside a project, with a status and an optional due date."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.extensions import db

TASK_STATUSES = ("todo", "doing", "done")


class Task(db.Model):
    __tablename__ = "tasks"
    __table_args__ = (
        sa.CheckConstraint("status IN ('todo', 'doing', 'done')", name="status"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    project_id: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(sa.String(500))
    status: Mapped[str] = mapped_column(sa.String(20), server_default="todo")
    due_date: Mapped[date | None] = mapped_column(sa.Date, index=True)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )
    # NOT NULL once the post-deploy revision has run; the database's default fills it for
    # rows this code inserts, and for those the previous release inserts during a deploy.
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )

    project = relationship("Project", back_populates="tasks")

    def to_dict(self) -> dict:
        return {"id": self.id, "project_id": self.project_id, "title": self.title,
                "status": self.status,
                "due_date": self.due_date.isoformat() if self.due_date else None,
                "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}
