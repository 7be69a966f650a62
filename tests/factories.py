"""Valid field values for any entity, derived from its metadata (so new entities are covered too)."""
from __future__ import annotations

import itertools
from typing import Any

from crm_meta.metadata.model import Entity, Field

_seq = itertools.count(1)


def credit_code(n: int) -> str:
    return f"91110000MA{n:08d}"


def api_value(f: Field, refs: dict[str, int], user_id: int, dicts) -> Any:
    """A valid JSON value for ``f`` (as a REST client sends it)."""
    n = next(_seq)
    if f.storage == "code":  # the declared default (a pipeline's initial state), else the last item
        return f.default if isinstance(f.default, str) else dicts.items(f.dictionary, group=f.group)[-1].code
    if f.is_multi:
        return [i.code for i in dicts.items(f.dictionary, group=f.group)[:2]]
    if f.storage == "fk_entity":
        return refs[f.entity]
    if f.storage == "fk_user":
        return user_id
    if f.name == "credit_code":
        return credit_code(n)
    return {
        "phone": "13812345678", "email": f"u{n}@example.com", "url": "https://example.com/a",
        "text": f"内容 {n}", "integer": int(f.min or 0) + 3 if f.max is None else int(f.max),
        "money": 1234.5, "decimal": 12.25, "boolean": True, "date": "2026-01-05",
        "datetime": "2026-01-05T10:30:00",
    }.get(f.type, f"{f.name} {n}"[: f.max_length or 50])


def api_record(entity: Entity, refs: dict[str, int], user_id: int, dicts) -> dict[str, Any]:
    return {f.name: api_value(f, refs, user_id, dicts) for f in entity.user_fields if f.editable}


def form_record(entity: Entity, refs: dict[str, int], user_id: int, dicts) -> dict[str, Any]:
    """The same values as a browser posts them (text, 'y' for checkboxes, lists for multi-selects)."""
    out = {}
    for name, value in api_record(entity, refs, user_id, dicts).items():
        f = entity.field(name)
        if name not in entity.form_fields:
            continue
        if f.storage == "boolean":
            if value:
                out[name] = "y"
        elif f.storage == "datetime":
            out[name] = value.replace("T", " ")
        elif isinstance(value, list):
            out[name] = value
        else:
            out[name] = str(value)
    return out
