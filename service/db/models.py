"""Tables. Later features add theirs here (or in a sibling module imported by this package)."""

from __future__ import annotations

import time

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def now() -> int:
    return int(time.time())


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    """One row: the schema version this database was last migrated to."""

    __tablename__ = "schema_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    version: Mapped[int] = mapped_column(Integer)


class Tenant(Base):
    """An owner of resources. Every file, job, model and store belongs to exactly one tenant."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    keys: Mapped[list[ApiKeyRow]] = relationship(back_populates="tenant")


class ApiKeyRow(Base):
    """A tenant's API key. Only a SHA-256 of the key is stored: keys are 32 random bytes, so a fast
    hash is enough (no dictionary to attack) and lets us look a key up by its hash."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    revoked_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tenant: Mapped[Tenant] = relationship(back_populates="keys")
