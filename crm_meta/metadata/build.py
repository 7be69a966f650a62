"""Turn validated dictionary files into one immutable Registry."""
from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Iterable

from crm_meta.errors import SourceLocation
from crm_meta.metadata.fieldtypes import FieldTypes, field_types_of
from crm_meta.metadata.model import (
    DictItem,
    Dictionary,
    Entity,
    Field,
    FormSection,
    Label,
    Menu,
    ACTIONS,
    DEPARTMENT_DICTIONARY,
    DEPARTMENT_FIELD,
    Evidence,
    Grant,
    FollowUpTask,
    Pipeline,
    Registry,
    Role,
    Transition,
)


def label(value: Any, fallback: str = "") -> Label:
    if isinstance(value, dict):
        return Label(zh=value["zh"], en=value["en"])
    if isinstance(value, str):
        return Label(zh=value, en=value)
    return Label(zh=fallback, en=fallback)


def _department_field() -> Field:
    return Field(DEPARTMENT_FIELD, "enum", Label("所属部门", "Department"), dictionary=DEPARTMENT_DICTIONARY,
                 indexed=True, system=True)


def _system_fields() -> tuple[Field, ...]:
    return (
        Field("created_at", "datetime", Label("创建时间", "Created at"), system=True),
        Field("created_by", "user", Label("创建人", "Created by"), system=True),
        Field("updated_at", "datetime", Label("更新时间", "Updated at"), system=True),
        Field("updated_by", "user", Label("更新人", "Updated by"), system=True),
    )


def build_field(name: str, body: dict, source: SourceLocation | None, types: FieldTypes | None = None) -> Field:
    """One declared field; ``types``: the app's field types (a plugin type is built on its base)."""
    custom = types.custom(body["type"]) if types is not None else None
    base = custom.base if custom is not None else body["type"]
    optional = {k: body[k] for k in ("required", "unique", "indexed", "readonly", "default", "length",
                                     "min_length", "min", "max", "precision", "scale", "pattern",
                                     "dictionary", "group", "entity", "format", "mask", "needs_approval",
                                     "renamed_from") if k in body}
    if custom is not None:
        optional["custom"] = custom
    if base == "decimal":
        optional.setdefault("precision", 18)
        optional.setdefault("scale", 2)
    if base == "money":
        optional.update(precision=18, scale=2)
    if body.get("classes"):
        optional["classes"] = tuple(body["classes"])
    return Field(
        name=name,
        type=body["type"],
        label=label(body.get("label"), name),
        help=label(body["help"]) if "help" in body else None,
        message=label(body["message"]) if "message" in body else None,
        source=source,
        **optional,
    )


def _section(s: dict) -> FormSection:
    return FormSection(label(s["label"]), tuple(s["fields"]))


def build_entity(name: str, body: dict, locate, extensions: Iterable[tuple[dict, Any]] = (),
                 departments: bool = False, types: FieldTypes | None = None) -> Entity:
    """One entity; ``extensions`` are the ``extend:`` bodies for it (with their locate), in file order.

    Added fields come after the entity's own; their ``list``/``search``/``filters`` are appended to the
    entity's (or to its defaults, which only ever count its own fields) and their ``form`` sections to its
    form; added fields in no section join the entity's last section.
    """
    retired: list[Field] = []

    def active(built: Field, b: dict) -> bool:
        if b.get("active", True) is False:
            retired.append(built)
            return False
        return True

    own = tuple(f for n, b in body["fields"].items()
                if active(f := build_field(n, b, locate(("fields", n)), types), b))
    declared = [f.name for f in own]
    added: list[Field] = []
    extra: dict[str, list[str]] = {"list": [], "search": [], "filters": []}
    extra_form: list[FormSection] = []
    for ext, ext_locate in extensions:
        added += [f for n, b in ext["fields"].items()
                  if active(f := build_field(n, b, ext_locate(("fields", n)), types), b)]
        for key in extra:
            extra[key] += ext.get(key) or []
        extra_form += [_section(s) for s in ext.get("form") or ()]
    gone = {f.name for f in retired}
    if gone:  # a retired field leaves every placement
        extra = {k: [n for n in v if n not in gone] for k, v in extra.items()}
        extra_form = [FormSection(s.label, tuple(n for n in s.fields if n not in gone)) for s in extra_form]
        body = dict(body)
        for key in ("list", "search", "filters"):
            if body.get(key):
                body[key] = [n for n in body[key] if n not in gone]
        if body.get("form"):
            body["form"] = [dict(s, fields=[n for n in s["fields"] if n not in gone]) for s in body["form"]]
    declared_fields = own + tuple(added)
    owner = body.get("owner") or next((f.name for f in declared_fields if f.name == "owner" and f.type == "user"), None)
    department = (_department_field(),) if owner and departments else ()
    fields = declared_fields + department + _system_fields()
    sort = body.get("sort", "-created_at")
    form = tuple(_section(s) for s in body.get("form") or ())
    if not form:
        form = (FormSection(label({"zh": "基本信息", "en": "Details"}), tuple(declared)),)
    placed = {n for s in extra_form for n in s.fields}
    loose = tuple(f.name for f in added if f.name not in placed)
    if loose:
        form = form[:-1] + (FormSection(form[-1].label, form[-1].fields + loose),)
    form += tuple(extra_form)
    return Entity(
        name=name,
        label=label(body["label"], name),
        fields=fields,
        menu=body.get("menu"),
        order=body.get("order", 0),
        title=body.get("title") or next((f.name for f in fields if f.storage == "string"), None),
        sort_field=sort.lstrip("-"),
        sort_desc=sort.startswith("-"),
        list_fields=tuple(body.get("list") or declared[:6]) + tuple(extra["list"]),
        search_fields=tuple(body.get("search") or
                            [f.name for f in own if f.kind.text_search][:3]) + tuple(extra["search"]),
        filter_fields=tuple(body.get("filters") or ()) + tuple(extra["filters"]),
        form=form,
        owner_field=owner,
        assignee_field=body.get("assignee"),
        source=locate(()),
        retired=tuple(retired),
        renamed_from=body.get("renamed_from"),
    )


def build_dictionary(name: str, body: dict) -> Dictionary:
    items = tuple(
        DictItem(
            code=str(i["code"]),
            label=label(i["label"], str(i["code"])),
            order=i.get("order", n),
            active=i.get("active", True),
            group=i.get("group"),
            attrs=MappingProxyType(dict(i.get("attrs") or {})),
        )
        for n, i in enumerate(body["items"])
    )
    return Dictionary(name, label(body["label"], name), tuple(sorted(items, key=lambda i: i.order)))


def build_role(name: str, body: dict) -> Role:
    grants = {}
    for entity, g in (body.get("entities") or {}).items():
        actions = set(g.get("actions") or ())
        if "all" in actions:
            actions = set(ACTIONS)
        grants[entity] = Grant(frozenset(actions), g.get("scope", "own"), MappingProxyType(dict(g.get("fields") or {})),
                               MappingProxyType(dict(g.get("classes") or {})))
    return Role(name, label(body["label"], name), bool(body.get("superuser")), MappingProxyType(grants),
                tuple(body.get("screens") or ()))


def build_pipeline(name: str, body: dict, dictionaries: dict[str, Any], entities: dict[str, dict]) -> Pipeline:
    """A pipeline; ``from: '*'`` expands to every state of the field's dictionary except the target."""
    field_body = ((entities.get(body["entity"]) or {}).get("fields") or {}).get(body["field"]) or {}
    states = [str(i["code"]) for i in (dictionaries.get(field_body.get("dictionary")) or {}).get("items") or ()]
    transitions = []
    for t in body["transitions"]:
        src = t["from"]
        sources = frozenset(s for s in states if s != t["to"]) if src == "*" else frozenset(
            [src] if isinstance(src, str) else src)
        evidence = tuple(Evidence(field_name=e) if isinstance(e, str) else
                         Evidence(related=e["related"], where=MappingProxyType(dict(e["where"])))
                         for e in t.get("requires_one_of") or ())
        transitions.append(Transition(
            sources=sources, target=t["to"], label=label(t["label"]) if "label" in t else None,
            roles=frozenset(t["roles"]) if "roles" in t else None, requires=tuple(t.get("requires") or ()),
            requires_one_of=evidence, sets=MappingProxyType(dict(t.get("set") or {})),
            notify_owner=bool(t.get("notify_owner")), comment_required=bool(t.get("comment_required")),
            follow_up=FollowUpTask(int(t["follow_up"]["in_days"]), label(t["follow_up"]["note"])
                                   if t["follow_up"].get("note") else None) if t.get("follow_up") else None))
    initial = body.get("initial") or field_body.get("default")
    return Pipeline(name, label(body["label"], name), body["entity"], body["field"],
                    str(initial) if initial is not None else None, tuple(transitions))


def _json_default(value: Any) -> str:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(type(value))


def digest_of(documents: Iterable[Any]) -> str:
    """A stable hash of the merged declarations (what permission sync and swaps key on)."""
    h = hashlib.sha256()
    for doc in documents:
        h.update(json.dumps(doc, sort_keys=True, default=_json_default, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def build_registry(files, field_types: FieldTypes | None = None) -> Registry:
    """Merge validated files (LoadedFile) into a Registry; ``field_types``: the app's (None: built-in only)."""
    types = field_types_of(field_types)
    entities, dictionaries, menus, roles, docs = [], [], [], [], []
    pipeline_bodies: list[tuple[str, dict]] = []
    all_dicts = {n: b for f in files for n, b in ((f.data or {}).get("dictionaries") or {}).items()}
    all_entities = {n: b for f in files for n, b in ((f.data or {}).get("entities") or {}).items()}
    departments = any(DEPARTMENT_DICTIONARY in ((f.data or {}).get("dictionaries") or {}) for f in files)
    extensions: dict[str, list[tuple[dict, Any]]] = {}
    for f in files:
        for name, body in ((f.data or {}).get("extend") or {}).items():
            extensions.setdefault(name, []).append((body, lambda p, f=f, n=name: f.locate(("extend", n) + p)))
    for f in files:
        data = f.data or {}
        doc = {k: data.get(k) for k in ("menus", "dictionaries", "entities")}
        for optional in ("extend", "roles", "pipelines"):  # absent keys leave older files' digests as they were
            if data.get(optional):
                doc[optional] = data[optional]
        docs.append(doc)
        for name, body in (data.get("menus") or {}).items():
            menus.append(Menu(name, label(body["label"], name), body.get("order", 0), body.get("icon")))
        for name, body in (data.get("dictionaries") or {}).items():
            dictionaries.append(build_dictionary(name, body))
        for name, body in (data.get("entities") or {}).items():
            entities.append(build_entity(name, body, lambda p, f=f, n=name: f.locate(("entities", n) + p),
                                         extensions.get(name, ()), departments, types))
        for name, body in (data.get("roles") or {}).items():
            roles.append(build_role(name, body))
        for name, body in (data.get("pipelines") or {}).items():
            pipeline_bodies.append((name, body))
    used = sorted({f.type for e in entities for f in e.fields + e.retired if f.custom is not None})
    if used:  # a plugin type's base or length decides the column: a change of it must change the digest
        docs.append({"field_types": {n: {"base": types.custom(n).base, "length": types.custom(n).kind.length}
                                     for n in used}})
    docs.sort(key=lambda d: json.dumps(d, sort_keys=True, default=_json_default))
    return Registry(
        entities=tuple(sorted(entities, key=lambda e: (e.menu or "", e.order, e.name))),
        dictionaries=tuple(sorted(dictionaries, key=lambda d: d.name)),
        menus=tuple(sorted(menus, key=lambda m: (m.order, m.name))),
        digest=digest_of(docs),
        roles=tuple(sorted(roles, key=lambda r: r.name)),
        pipelines=tuple(build_pipeline(n, b, all_dicts, all_entities) for n, b in sorted(pipeline_bodies)),
        field_types=types,
    )
