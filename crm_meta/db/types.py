"""Field type → SQLAlchemy column type."""
from __future__ import annotations

from sqlalchemy import Boolean, Date, DateTime, Integer, Numeric, String, Text
from sqlalchemy.types import TypeEngine

from crm_meta.metadata.model import Field

CODE_LENGTH = 64


def column_type(field: Field) -> TypeEngine:
    storage = field.storage
    if storage == "string":
        return String(field.max_length)
    if storage == "text":
        return Text()
    if storage == "integer":
        return Integer()
    if storage == "decimal":
        return Numeric(field.precision or 18, field.scale if field.scale is not None else 2)
    if storage == "boolean":
        return Boolean()
    if storage == "date":
        return Date()
    if storage == "datetime":
        return DateTime()
    if storage == "code":
        return String(CODE_LENGTH)
    if storage in ("fk_entity", "fk_user"):
        return Integer()
    raise ValueError(f"no column type for storage {storage!r}")
