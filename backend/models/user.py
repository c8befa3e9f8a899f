"""People who own projects."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.extensions import db


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    # The SHA-256 of the user's API token, hex; the token itself is never stored.
    token_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )

    projects = relationship("Project", back_populates="owner", passive_deletes=True)

    def to_dict(self) -> dict:
        return {"id": self.id, "email": self.email, "name": self.name,
                "created_at": self.created_at.isoformat()}
