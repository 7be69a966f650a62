"""Screen input for the model screens, and what they (and ``GET /api/v1/schema/``) list — pure Python.

A submitted field or entity form becomes an operation body of crm_meta/services/schema_ops.py, the same
language the REST API takes; ``entity_rows`` describes every entity with its fields for display.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

from crm_meta.metadata.fieldtypes import field_types_of
from crm_meta.schema.overlay import PLACEMENTS, Overlay, field_spec
from crm_meta.services.schema_ops import OpRefused

OWNER_FIELD = {"type": "user", "label": {"zh": "负责人", "en": "Owner"}, "required": True, "default": "current_user"}


def _flag(form: Mapping, key: str) -> bool:
    return str(form.get(key, "")).strip().lower() in ("y", "1", "on", "true", "yes")


def _default(kind: str, text: str) -> Any:
    """A default typed in a form, as the dictionary language has it (left as text when it does not parse:
    the dictionary check then says what is wrong)."""
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "boolean":
        return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower(), text)
    if kind in ("multi_enum", "tags"):
        return [c.strip() for c in text.split(",") if c.strip()]
    return text


def field_body_from_form(form: Mapping, *, entity: str, name: str | None = None, new: bool = True,
                         types=None) -> dict:
    """The add_field / update_field body for a submitted field form (update: every key the form covers,
    None where blank, so that clearing an input removes the key)."""
    name = name if name is not None else str(form.get("name", "")).strip()
    kind = str(form.get("type", "")).strip()
    zh, en = str(form.get("label_zh", "")).strip(), str(form.get("label_en", "")).strip()
    if not zh or not en:
        raise OpRefused(["a Chinese and an English label are required"])
    types = field_types_of(types)  # the app's types (plugins add some)
    keys = types.get(kind).keys if kind in types else frozenset()
    text = {k: str(form.get(k, "")).strip() for k in ("default", "dictionary", "target", "length", "pattern",
                                                      "format")}
    length = text["length"]
    options = {
        "required": _flag(form, "required") or None, "unique": _flag(form, "unique") or None,
        "indexed": _flag(form, "indexed") or None,
        "default": _default(kind, text["default"]) if text["default"] else None,
        "dictionary": text["dictionary"] or None, "entity": text["target"] or None,
        "length": (int(length) if length.isdigit() else length) or None,
        "pattern": text["pattern"] or None, "format": text["format"] or None,
    }
    options = {k: (v if k in keys else None) for k, v in options.items()}
    body: dict[str, Any] = {"op": "add_field" if new else "update_field", "entity": entity, "name": name,
                            **{k: _flag(form, k) for k in PLACEMENTS}}
    if new:
        body["field"] = field_spec(kind, zh, en, **{k: v for k, v in options.items() if v is not None})
    else:
        body["field"] = {"type": kind, "label": {"zh": zh, "en": en}, **options}
    return body


def entity_body_from_form(form: Mapping) -> dict:
    """The add_entity body for the new-entity form: the entity with its first (title) string field and,
    when asked, an owner field (records then follow the roles' row scopes)."""
    name = str(form.get("name", "")).strip()
    fname = str(form.get("field_name", "")).strip() or "name"
    zh, en = str(form.get("label_zh", "")).strip(), str(form.get("label_en", "")).strip()
    fzh, fen = str(form.get("field_label_zh", "")).strip(), str(form.get("field_label_en", "")).strip()
    if not (zh and en and fzh and fen):
        raise OpRefused(["a Chinese and an English label are required, for the entity and for its first field"])
    owned = _flag(form, "owned")
    if owned and fname == "owner":
        raise OpRefused(["'owner' is the owner field of the new entity; give the first field another name"])
    length = str(form.get("field_length", "")).strip()
    first = field_spec("string", fzh, fen, required=True,
                       length=(int(length) if length.isdigit() else length) or None)
    spec: dict[str, Any] = {"label": {"zh": zh, "en": en}, "fields": {fname: first}, "title": fname,
                            "list": [fname], "search": [fname]}
    menu = str(form.get("menu", "")).strip()
    if menu:
        spec["menu"] = menu
    if owned:
        spec["fields"]["owner"] = copy.deepcopy(OWNER_FIELD)
        spec["list"].append("owner")
        spec["filters"] = ["owner"]
    return {"op": "add_entity", "name": name, "spec": spec}


# -- what the screens and GET /api/v1/schema/ list -----------------------------------------------------

def entity_rows(registry, overlay: Overlay) -> list[dict]:
    """Every entity with its fields: where each is declared, whether admins may change it, placement."""
    out = []
    for e in registry.entities:
        custom = overlay.entity(e.name)
        own = set((custom.spec.get("fields") or {}) if custom else ())
        fields = []
        for f, active in [(f, True) for f in e.user_fields if f.name != "department"] + [(f, False) for f in e.retired]:
            origin = "field" if overlay.field(e.name, f.name) else "entity" if f.name in own else "yaml"
            fields.append({
                "name": f.name, "type": f.type, "label": {"zh": f.label.zh, "en": f.label.en},
                "required": f.required, "active": active, "custom": origin != "yaml", "origin": origin,
                "source": f.source.path if f.source else None,
                "list": f.name in e.list_fields, "search": f.name in e.search_fields,
                "filters": f.name in e.filter_fields,
            })
        out.append({"name": e.name, "label": {"zh": e.label.zh, "en": e.label.en}, "menu": e.menu,
                    "custom": custom is not None, "fields": fields})
    return out


def overlay_dict(overlay: Overlay) -> dict:
    return {"fields": [{"entity": f.entity, "name": f.name, "field": f.spec, "active": f.active,
                        **{k: getattr(f, k) for k in PLACEMENTS}} for f in overlay.fields],
            "entities": [{"name": e.name, "spec": e.spec} for e in overlay.entities]}
