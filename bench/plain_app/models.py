"""The example's tables, as a stock Flask-SQLAlchemy app would declare them.

Columns, types, server defaults, ``onupdate`` and relationships mirror ``backend/models/``:
the ORM then loads, inserts and updates exactly as ours does, with the same SQL, and the
JSON is the same. Constraints and indexes are left out of the declarations: the database
already has them (it was migrated by the project), and a request uses them all the same, as
the token's lookup uses the unique index on ``users.token_hash``.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column, relationship

db = SQLAlchemy()

TASK_STATUSES = ("todo", "doing", "done")


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    # The SHA-256 of the user's API token, hex.
    token_hash: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )

    projects = relationship("Project", back_populates="owner", passive_deletes=True)

    def to_dict(self) -> dict:
        return {"id": self.id, "email": self.email, "name": self.name,
                "created_at": self.created_at.isoformat()}


class Project(db.Model):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    owner_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(sa.String(200))
    slug: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )

    owner = relationship("User", back_populates="projects")
    tasks = relationship("Task", back_populates="project", passive_deletes=True)

    def to_dict(self) -> dict:
        return {"id": self.id, "owner_id": self.owner_id, "name": self.name,
                "slug": self.slug, "created_at": self.created_at.isoformat()}


class Task(db.Model):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    project_id: Mapped[int] = mapped_column(sa.BigInteger, sa.ForeignKey("projects.id"))
    title: Mapped[str] = mapped_column(sa.String(500))
    status: Mapped[str] = mapped_column(sa.String(20), server_default="todo")
    due_date: Mapped[date | None] = mapped_column(sa.Date)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )
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
