"""Dictionary items live in crm_dict_item, so adding an item never needs a schema migration."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import Table, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from crm_meta.metadata.model import Label, Registry


@dataclass(frozen=True)
class Item:
    dictionary: str
    code: str
    label: Label
    order: int
    active: bool
    group: str | None
    attrs: dict


class Dictionaries:
    """The items of every dictionary as stored, read once per unit of work."""

    def __init__(self, items: Iterable[Item]):
        self._by_dict: dict[str, list[Item]] = {}
        for item in sorted(items, key=lambda i: (i.dictionary, i.order, i.code)):
            self._by_dict.setdefault(item.dictionary, []).append(item)
        self._by_code = {(i.dictionary, i.code): i for lst in self._by_dict.values() for i in lst}

    @classmethod
    def load(cls, session: Session | Connection, table: Table) -> "Dictionaries":
        rows = session.execute(select(table)).mappings()
        return cls(Item(r["dictionary"], r["code"], Label(r["label_zh"], r["label_en"]), r["sort_order"],
                        bool(r["active"]), r["grp"], dict(r["attrs"] or {})) for r in rows)

    def items(self, dictionary: str, *, active_only: bool = True, group: str | None = None) -> list[Item]:
        return [i for i in self._by_dict.get(dictionary, [])
                if (i.active or not active_only) and (group is None or i.group == group)]

    def get(self, dictionary: str, code: str) -> Item | None:
        return self._by_code.get((dictionary, code))

    def label(self, dictionary: str, code: str | None, lang: str) -> str:
        if code is None:
            return ""
        item = self.get(dictionary, code)
        return item.label.get(lang) if item else code


def sync_from_registry(conn: Connection, table: Table, registry: Registry) -> int:
    """Insert YAML items the table lacks and refresh YAML-origin ones; admin edits are kept."""
    existing = {(r.dictionary, r.code): r for r in conn.execute(select(table))}
    inserts, changed = [], 0
    for d in registry.dictionaries:
        for item in d.items:
            row = {"dictionary": d.name, "code": item.code, "label_zh": item.label.zh, "label_en": item.label.en,
                   "sort_order": item.order, "active": item.active, "grp": item.group,
                   "attrs": dict(item.attrs), "origin": "yaml"}
            old = existing.get((d.name, item.code))
            if old is None:
                inserts.append(row)
            elif old.origin == "yaml" and any(getattr(old, k) != v for k, v in row.items()):
                conn.execute(table.update().where(table.c.id == old.id).values(**row))
                changed += 1
    if inserts:
        conn.execute(table.insert(), inserts)
    return len(inserts) + changed
