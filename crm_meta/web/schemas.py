"""Marshmallow schemas for the REST API, derived from the metadata (they also feed the OpenAPI document)."""
from __future__ import annotations

from datetime import datetime

from marshmallow import Schema, fields, missing
from marshmallow.decorators import POST_DUMP, PRE_DUMP
from sqlalchemy.engine import Row

from crm_meta.metadata.model import Entity, Field
from crm_meta.services.masking import mask


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


_MISSING = object()
# exact field class → the type of value its ``_serialize`` returns as it is (None: only None)
_PLAIN = {fields.String: str, fields.Integer: int, fields.Boolean: None, fields.Date: None,
          fields.DateTime: None, fields.List: None, fields.Decimal: None, _Number: None}


class _Unmatched:
    """No value has this type."""


_SECONDS = "%Y-%m-%dT%H:%M:%S"  # the API's datetimes (``_field``)


def _seconds(serialize):
    """``DateTime(format=_SECONDS)._serialize``, with ``isoformat`` (a third of ``strftime``'s
    time) where it writes the same text: a naive ``datetime`` of a four-digit year."""
    def write(value, attr, obj, **kwargs):
        if type(value) is datetime and value.tzinfo is None and value.year >= 1000:
            return value.isoformat(timespec="seconds")
        return serialize(value, attr, obj, **kwargs)
    return write


class RowWriter:
    """``policy.project(schema.dump(obj))`` for many rows, without marshmallow's per-value calls.

    A list page is 25 rows × ~30 fields: marshmallow's ``dump`` goes through ``serialize`` →
    ``get_value`` → ``utils.get_value`` → ``_serialize`` for each value. Here each row reads the
    attributes once and calls the very ``_serialize`` of the schema's bound fields, so the values
    are the same by construction; a ``str`` (``String``) or an ``int`` (``Integer``) and ``None``
    go through as they are, as those fields return them. Hidden fields are left out and masked
    ones masked as ``Policy.project`` does. Schemas this does not know how to copy (hooks, data
    keys, dotted attributes, dump defaults, custom accessors) use ``dump`` + ``project``.
    """

    def __init__(self, schema):
        self.schema = schema
        self.plan = self._compile(schema)

    @staticmethod
    def _compile(schema):
        if schema._hooks[PRE_DUMP] or schema._hooks[POST_DUMP] or schema.dict_class is not dict \
                or type(schema).get_attribute is not Schema.get_attribute:
            return None
        plan = []
        for name, field in schema.dump_fields.items():
            cls = type(field)
            attr = field.attribute if field.attribute is not None else name
            if (not field._CHECK_ATTRIBUTE or cls.serialize is not fields.Field.serialize
                    or cls.get_value is not fields.Field.get_value or field.dump_default is not missing
                    or field.data_key is not None or not isinstance(attr, str) or "." in attr):
                return None
            # fields whose _serialize returns None for None (and str / int values as they are)
            known = cls in _PLAIN and not getattr(field, "as_string", False)
            plain = _PLAIN.get(cls) if known else _Unmatched
            serialize = field._serialize
            if cls is fields.DateTime and field.format == _SECONDS:
                serialize = _seconds(serialize)
            plan.append((name, attr, known, plain, serialize))
        return tuple(plan)

    def usable(self, obj) -> bool:
        """Whether ``obj`` is read by attribute as marshmallow would (no ``__getitem__``)."""
        return self.plan is not None and not hasattr(obj, "__getitem__")

    def rows(self, objs, policy, entity: str, values: dict | None = None) -> list[dict]:
        """``[policy.project(entity, d) for d in schema.dump(objs, many=True)]``; ``values``
        (attribute → one value per row) gives values read with the rows, e.g. the codes of
        multi-value fields (``EntityInterface.page``), in place of the attributes. ``objs`` are
        ``Row`` tuples of one result whose column names are the attributes (``EntityInterface.page``)
        or objects, whose attributes are read once each."""
        if not objs or self.plan is None:
            return self._dumped(objs, policy, entity)
        access = policy.access(entity)
        hidden, masked = access.hidden, access.masked
        values = values or {}
        plan = [(key, attr, known, plain, ser, masked.get(key), values.get(attr))
                for key, attr, known, plain, ser in self.plan if key not in hidden]
        if isinstance(objs[0], Row):
            place = {name: i for i, name in enumerate(objs[0]._fields)}
            if any(given is None and attr not in place for _, attr, *__, given in plan):
                return self._dumped(objs, policy, entity)  # not the shape this reads
            rows = objs
        elif all(self.usable(o) for o in objs):
            attrs = [attr for _, attr, *__, given in plan if given is None]
            place = {attr: i for i, attr in enumerate(attrs)}
            rows = [_read_attributes(o, attrs) for o in objs]
            if None in rows:  # an attribute missing: marshmallow leaves its key out
                return self._dumped(objs, policy, entity)
        else:
            return self._dumped(objs, policy, entity)
        plan = [(key, place.get(attr), known, plain, ser, kind, given)
                for key, attr, known, plain, ser, kind, given in plan]
        out = []
        for i, (row, obj) in enumerate(zip(rows, objs)):
            written = {}
            for key, at, known, plain, ser, kind, given in plan:
                value = row[at] if given is None else given[i]
                if not (known and (value is None or type(value) is plain)):
                    value = ser(value, key, obj)
                written[key] = mask(kind, value) if kind else value
            out.append(written)
        return out

    def _dumped(self, objs, policy, entity: str) -> list[dict]:
        return [policy.project(entity, d) for d in self.schema.dump(objs, many=True)]


def _read_attributes(obj, attrs) -> tuple | None:
    """``obj``'s values of ``attrs`` (a mapped object's loaded ones from its ``__dict__``: no
    descriptor call), or None when one is missing."""
    loaded = getattr(obj, "__dict__", {})
    out = []
    for attr in attrs:
        value = loaded.get(attr, _MISSING)
        if value is _MISSING:  # not loaded (or not an instance attribute): as marshmallow reads it
            value = getattr(obj, attr, _MISSING)
            if value is _MISSING:
                return None
        out.append(value)
    return tuple(out)
