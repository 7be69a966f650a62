"""Admins' model changes as operations — pure Python, shared by the schema screens and their REST API.

An operation is a body in the dictionary language (REST sends it as JSON; crm_meta/services/schema_forms.py
turns a screen's form into one)::

    {"op": "add_field", "entity": "customer", "name": "wechat",
     "field": {"type": "string", "label": {"zh": "微信", "en": "WeChat"}, "length": 64},
     "list": true, "search": true, "filters": false}
    {"op": "update_field", "entity": "customer", "name": "wechat", "field": {"label": {"en": "WeChat ID"}},
     "list": false}                       # keys given replace (null removes one); placements given are set
    {"op": "delete_field", "entity": "customer", "name": "wechat"}           # drops the column
    {"op": "add_entity", "name": "project", "spec": {"label": ..., "menu": "sales", "fields": {...}}}
    {"op": "delete_entity", "name": "project"}                               # drops the table

``build_op`` checks the body against the current registry and overlay and returns an ``Op`` whose
``change`` (Overlay → Overlay) the schema service plans and applies (crm_meta/services/schema_changes.py);
the dictionary checks then run on the result. Bad bodies raise ``OpRefused`` (nothing changes).
Only what admins added on screen can be changed or deleted; fields of ``schemas/`` are read-only.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping

from crm_meta.errors import CrmError
from crm_meta.metadata.fieldtypes import FIELD_TYPES, field_types_of
from crm_meta.metadata.model import RESERVED_FIELD_NAMES
from crm_meta.schema.overlay import PLACEMENTS, CustomEntity, CustomField, Overlay
from crm_meta.schema.reserved import reserved_reason
from crm_meta.schema.structure import IDENTIFIER

OPS = ("add_field", "update_field", "delete_field", "add_entity", "delete_entity")
TYPES = tuple(FIELD_TYPES)  # the built-in ones; an app's own: registry.field_types (plugins add types)
DICTIONARY_TYPES = ("enum", "multi_enum", "tags")
KEYS = {"add_field": {"entity", "name", "field", *PLACEMENTS}, "update_field": {"entity", "name", "field", *PLACEMENTS},
        "delete_field": {"entity", "name"}, "add_entity": {"name", "spec"}, "delete_entity": {"name"}}


class OpRefused(CrmError):
    """The operation is malformed or not allowed; nothing was changed. ``errors``: one message each."""

    status = 400

    def __init__(self, errors: Iterable[str]):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class Op:
    kind: str
    entity: str  # the entity changed (the new or deleted one for entity operations)
    name: str | None  # the field, for field operations
    body: dict  # the operation as checked (JSON-safe): carried by the confirm page, kept in the audit
    change: Callable[[Overlay], Overlay]
    tables: set[str] | None  # the tables the plan compares (None: all)

    @property
    def destructive(self) -> bool:
        return self.kind in ("delete_field", "delete_entity")

    def describe(self) -> str:
        what = {"add_field": "add field", "update_field": "change field", "delete_field": "delete field",
                "add_entity": "add entity", "delete_entity": "delete entity"}[self.kind]
        return f"{what} {self.entity}.{self.name}" if self.name else f"{what} {self.entity}"


def name_problem(name: Any, *, entity: bool) -> str | None:
    """Why ``name`` cannot name a new entity (or field), or None."""
    what = "entity" if entity else "field"
    if not isinstance(name, str) or not name.strip():
        return f"the {what} name is required"
    if not IDENTIFIER.match(name):
        return (f"'{name}' is not a valid {what} name: use a lower-case letter, then lower-case letters, digits "
                "or _ (at most 40 characters)")
    if not entity and name in RESERVED_FIELD_NAMES:
        return f"'{name}' is a system field every entity has already; choose another name"
    reason = reserved_reason(name, entity=entity)
    return f"{reason}; choose another name" if reason else None


def build_op(body: Any, registry, overlay: Overlay, taken: Iterable[str] = ()) -> Op:
    """Check ``body`` against ``registry`` (the dictionary in use) and ``overlay``; return the operation.

    ``taken``: names an entity may not have because the CRM's own URLs or permissions use them.
    """
    if not isinstance(body, Mapping):
        raise OpRefused(["the body must be a JSON object with an 'op'"])
    kind = body.get("op")
    if kind not in OPS:
        raise OpRefused([f"'op' must be one of {', '.join(OPS)}"])
    unknown = sorted(set(body) - KEYS[kind] - {"op"})
    if unknown:
        raise OpRefused([f"unknown key(s) for {kind}: {', '.join(unknown)}"])
    for key in PLACEMENTS:
        if key in body and not isinstance(body[key], bool):
            raise OpRefused([f"'{key}' must be true or false"])
    if kind in ("add_entity", "delete_entity"):
        return _entity_op(kind, body, registry, overlay, set(taken))
    return _field_op(kind, body, registry, overlay)


# -- fields ---------------------------------------------------------------------------------------------

def _field_op(kind: str, body: Mapping, registry, overlay: Overlay) -> Op:
    ename, fname = body.get("entity"), body.get("name")
    if not isinstance(ename, str) or ename not in {e.name for e in registry.entities}:
        raise OpRefused([f"unknown entity {ename!r}" if ename else "'entity' is required"])
    entity = registry.entity(ename)
    types = field_types_of(getattr(registry, "field_types", None))
    spec = body.get("field")
    if spec is not None and not isinstance(spec, Mapping):
        raise OpRefused(["'field' must be a mapping of the field's keys (type, label, …)"])
    placements = {k: body[k] for k in PLACEMENTS if k in body}
    tables = {ename, f"{ename}__{fname}"}  # the table, and the link table of a multi-valued field
    clean = {"op": kind, "entity": ename, "name": fname}
    if kind == "add_field":
        problem = name_problem(fname, entity=False)
        if problem:
            raise OpRefused([problem])
        if entity.has_field(fname) or fname in {f.name for f in entity.retired} or overlay.field(ename, fname):
            raise OpRefused([f"entity '{ename}' already has a field '{fname}'; choose another name"])
        if spec is None:
            raise OpRefused(["'field' is required: the field's type, label and options"])
        if spec.get("type") not in types:
            raise OpRefused([f"the field type must be one of {', '.join(types.names)}"])
        spec = copy.deepcopy(dict(spec))
        new = CustomField(ename, fname, spec, **{k: placements.get(k, False) for k in PLACEMENTS})

        def add(o: Overlay) -> Overlay:
            if o.field(ename, fname):
                raise OpRefused([f"entity '{ename}' already has a field '{fname}'"])
            return o.with_field(new)

        return Op(kind, ename, fname, {**clean, "field": spec, **placements}, add, tables)
    where = _editable(ename, fname, entity, overlay)
    if kind == "delete_field":
        return Op(kind, ename, fname, clean, _delete_field(ename, fname, where), tables)
    if spec is None and not placements:
        raise OpRefused(["nothing to change: send 'field' (keys to change) and/or list, search, filters"])
    patch = copy.deepcopy(dict(spec or {}))
    if patch.get("type") is not None and patch["type"] not in types:
        raise OpRefused([f"the field type must be one of {', '.join(types.names)}"])
    defaults = _own_placements(entity, overlay, ename)
    return Op(kind, ename, fname, {**clean, **({"field": patch} if spec is not None else {}), **placements},
              _update_field(ename, fname, where, patch, placements, defaults, types), tables)


def _editable(ename: str, fname: Any, entity, overlay: Overlay) -> str:
    """'field' (a custom field) or 'entity' (declared with a custom entity); refuses anything else."""
    if isinstance(fname, str) and overlay.field(ename, fname):
        return "field"
    custom = overlay.entity(ename)
    if isinstance(fname, str) and custom and fname in (custom.spec.get("fields") or {}):
        return "entity"
    if isinstance(fname, str) and (entity.has_field(fname) or fname in {f.name for f in entity.retired}):
        f = entity.field(fname) if entity.has_field(fname) else next(x for x in entity.retired if x.name == fname)
        where = f" ({f.source.path})" if f.source else ""
        raise OpRefused([f"'{ename}.{fname}' is declared in the data dictionary files{where}; only fields added "
                         "on screen can be changed or deleted here"])
    raise OpRefused([f"entity '{ename}' has no field {fname!r}"])


def patched(spec: Mapping, patch: Mapping, types=None) -> dict:
    """``spec`` with ``patch`` applied: given keys replace (a label mapping merges), None removes a key.
    A new type drops the old keys it does not take (unless the patch sets them); ``active: true`` is the
    default and is left out."""
    new = copy.deepcopy(dict(spec))
    for key, value in patch.items():
        if value is None:
            new.pop(key, None)
        elif key == "label" and isinstance(value, Mapping) and isinstance(new.get("label"), Mapping):
            new["label"] = {**new["label"], **value}
        else:
            new[key] = copy.deepcopy(value)
    if new.get("active") is True:
        del new["active"]
    kind = patch.get("type")
    types = field_types_of(types)
    if kind in types and kind != spec.get("type"):
        for key in [k for k in new if k not in types.get(kind).keys and k not in patch]:
            del new[key]
    return new


def _own_placements(entity, overlay: Overlay, ename: str) -> dict[str, list[str]]:
    """The entity's list/search/filters without the custom fields (which carry their own placement)."""
    extra = {f.name for f in overlay.fields if f.entity == ename}
    return {"list": [n for n in entity.list_fields if n not in extra],
            "search": [n for n in entity.search_fields if n not in extra],
            "filters": [n for n in entity.filter_fields if n not in extra]}


def _update_field(ename: str, fname: str, where: str, patch: dict, placements: dict,
                  defaults: dict[str, list[str]], types=None) -> Callable[[Overlay], Overlay]:
    def change(o: Overlay) -> Overlay:
        if where == "field":
            f = o.field(ename, fname)
            if f is None:
                raise OpRefused([f"entity '{ename}' has no custom field '{fname}' (any more)"])
            return o.with_field(replace(f, spec=patched(f.spec, patch, types), **placements))
        custom = o.entity(ename)
        if custom is None or fname not in (custom.spec.get("fields") or {}):
            raise OpRefused([f"entity '{ename}' has no field '{fname}' (any more)"])
        spec = copy.deepcopy(custom.spec)
        spec["fields"][fname] = patched(spec["fields"][fname], patch, types)
        for key, on in placements.items():
            names = [n for n in (spec.get(key) or defaults[key]) if n != fname]
            spec[key] = names + [fname] if on else names
        return o.with_entity(CustomEntity(ename, spec))

    return change


def _delete_field(ename: str, fname: str, where: str) -> Callable[[Overlay], Overlay]:
    def change(o: Overlay) -> Overlay:
        if where == "field":
            if o.field(ename, fname) is None:
                raise OpRefused([f"entity '{ename}' has no custom field '{fname}' (any more)"])
            return o.without_field(ename, fname)
        custom = o.entity(ename)
        if custom is None or fname not in (custom.spec.get("fields") or {}):
            raise OpRefused([f"entity '{ename}' has no field '{fname}' (any more)"])
        spec = copy.deepcopy(custom.spec)
        del spec["fields"][fname]
        for key in PLACEMENTS:
            if spec.get(key):
                spec[key] = [n for n in spec[key] if n != fname]
        if spec.get("form"):
            spec["form"] = [dict(s, fields=[n for n in s["fields"] if n != fname]) for s in spec["form"]]
            spec["form"] = [s for s in spec["form"] if s["fields"]]
        return o.with_entity(CustomEntity(ename, spec))

    return change


# -- entities ---------------------------------------------------------------------------------------------

def _entity_op(kind: str, body: Mapping, registry, overlay: Overlay, taken: set[str]) -> Op:
    name = body.get("name")
    existing = {e.name for e in registry.entities}
    if kind == "delete_entity":
        if not isinstance(name, str) or overlay.entity(name) is None:
            raise OpRefused([f"'{name}' is declared in the data dictionary files; only entities added on screen "
                             "can be deleted here" if name in existing else f"there is no entity {name!r}"])

        def delete(o: Overlay) -> Overlay:
            if o.entity(name) is None:
                raise OpRefused([f"there is no entity '{name}' (any more)"])
            return o.without_entity(name)

        return Op(kind, name, None, {"op": kind, "name": name}, delete, None)
    problem = name_problem(name, entity=True)
    if problem:
        raise OpRefused([problem])
    if name in existing or overlay.entity(name):
        raise OpRefused([f"there is already an entity '{name}'; choose another name"])
    if name in taken:
        raise OpRefused([f"'{name}' is already used by the CRM's own screens or URLs; choose another name"])
    spec = body.get("spec")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("fields"), Mapping) or not spec["fields"]:
        raise OpRefused(["'spec' must be the entity's declaration with at least one field: "
                         "{label: {zh, en}, menu, fields: {name: {type, label, …}}, …}"])
    spec = copy.deepcopy(dict(spec))
    problems = [p for f in spec["fields"] if (p := name_problem(f, entity=False))]
    if problems:
        raise OpRefused(problems)

    def add(o: Overlay) -> Overlay:
        if o.entity(name):
            raise OpRefused([f"there is already an entity '{name}'"])
        return o.with_entity(CustomEntity(name, spec))

    return Op(kind, name, None, {"op": kind, "name": name, "spec": spec}, add, None)
