"""docs/schema-reference.md documents every key and every field type of the JSON Schema."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from crm_meta.schema.structure import json_schema

DOC = Path(__file__).resolve().parent.parent / "docs" / "schema-reference.md"


def schema_keys(node: Any) -> Iterator[str]:
    """Every property name anywhere in the schema (top level, $defs, nested objects and branches)."""
    if isinstance(node, dict):
        yield from node.get("properties", {})
        for value in node.values():
            yield from schema_keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from schema_keys(value)


def field_types() -> list[str]:
    return json_schema()["$defs"]["field"]["properties"]["type"]["enum"]


def documented_names(text: str) -> set[str]:
    """Names written in backticks on a markdown heading or table row."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("#") or line.lstrip().startswith("|"):
            names.update(re.findall(r"`([^`\s]+)`", line))
    return names


def test_the_walk_sees_the_whole_schema() -> None:
    keys = set(schema_keys(json_schema()))
    assert {"version", "menus", "icon", "items", "attrs", "zh", "en", "form", "min_length", "format"} <= keys
    assert len(field_types()) >= 17


def test_every_schema_key_and_field_type_is_documented() -> None:
    documented = documented_names(DOC.read_text(encoding="utf-8"))
    wanted = sorted(set(schema_keys(json_schema())) | set(field_types()))
    missing = [name for name in wanted if name not in documented]
    assert not missing, (f"{DOC.name} lacks a heading or table row with these keys in backticks: "
                         + ", ".join(missing))
