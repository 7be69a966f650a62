"""Marshmallow schemas for the REST API, derived from the metadata (they also feed the OpenAPI document)."""
from __future__ import annotations

from marshmallow import Schema, fields

from crm_meta.metadata.model import Entity, Field


def _field(f: Field, *, dump_only: bool = False) -> fields.Field:
    meta = {"description": f"{f.label.en} / {f.label.zh}"}
    if f.help:
        meta["description"] += f" — {f.help.en}"
    kw = {"allow_none": not f.required or f.system, "dump_only": dump_only, "metadata": meta}
    if f.custom is not None:  # a plugin's type: served as its base, with the type's name and pattern
        meta["description"] += f" (type {f.type}: {f.base})"
        meta["x-crm-type"] = f.type
        if f.custom.pattern:
            meta["pattern"] = f.custom.pattern
    s = f.storage
    if f.storage == "code":
        meta["description"] += f" (a code of dictionary '{f.dictionary}')"
        return fields.String(**kw)
    if f.is_multi:
        meta["description"] += f" (codes of dictionary '{f.dictionary}')"
        kw.pop("allow_none")
        return fields.List(fields.String(), **kw)
    if f.is_fk:
        target = "user" if s == "fk_user" else f.entity
        meta["description"] += f" (id of a {target})"
        return fields.Integer(attribute=f.column, **kw)
    if s == "integer":
        return fields.Integer(**kw)
    if s == "decimal":
        return fields.Decimal(as_string=False, places=None, **kw)
    if s == "boolean":
        return fields.Boolean(**kw)
    if s == "date":
        return fields.Date(**kw)
    if s == "datetime":
        return fields.DateTime(format="%Y-%m-%dT%H:%M:%S", **kw)
    if f.max_length:
        from marshmallow.validate import Length
        kw["validate"] = Length(max=f.max_length)
    return fields.String(**kw)


class _Number(fields.Decimal):
    """Money and decimals travel as JSON numbers."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else float(value)


def _schema(name: str, entity: Entity, *, writable: bool, with_version: bool) -> type[Schema]:
    attrs: dict = {}
    if not writable:
        attrs["id"] = fields.Integer(dump_only=True, metadata={"description": "Record id"})
    for f in entity.fields:
        if writable and not f.editable:
            continue
        field = _field(f, dump_only=not writable and not f.editable)
        if writable and not with_version and f.required and f.default is None:
            field.required = True
        if isinstance(field, fields.Decimal):
            field = _Number(attribute=field.attribute, allow_none=field.allow_none, dump_only=field.dump_only,
                            metadata=field.metadata)
        attrs[f.name] = field
    if with_version:
        attrs["version"] = fields.Integer(
            required=writable,
            metadata={"description": "Optimistic lock: the version you read; a changed record answers 409"})
    return type(name, (Schema,), attrs)


def build_schemas(entity: Entity, prefix: str) -> dict[str, type[Schema]]:
    return {
        "show": _schema(f"{prefix}Show", entity, writable=False, with_version=True),
        "add": _schema(f"{prefix}Post", entity, writable=True, with_version=False),
        "edit": _schema(f"{prefix}Put", entity, writable=True, with_version=True),
    }
