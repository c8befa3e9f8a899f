"""Projects group tasks; each belongs to one user."""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.extensions import db

SLUG_MAX = 200


def slugify(name: str) -> str:
    """The same rule the backfill migration applies in SQL, so old and new rows agree.

    Cut to the column's width: lower-casing can lengthen a name ('İ' becomes 'i' and a
    combining dot, which the rule turns into '-'), so 101 'İ' make a 201-character slug.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    return slug[:SLUG_MAX].rstrip("-") or "project"


class Project(db.Model):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    owner_id: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    slug: Mapped[str] = mapped_column(sa.String(SLUG_MAX))
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )

    owner = relationship("User", back_populates="projects")
    tasks = relationship("Task", back_populates="project", passive_deletes=True)

    def to_dict(self) -> dict:
        return {"id": self.id, "owner_id": self.owner_id, "name": self.name,
                "slug": self.slug, "created_at": self.created_at.isoformat()}
