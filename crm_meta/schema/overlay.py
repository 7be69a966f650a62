"""What admins changed on screen, kept as an overlay on top of ``schemas/`` — pure Python.

The overlay is written in the data dictionary language itself: custom fields are ``extend:`` sections,
whole entities are ``entities:``. It is rendered as YAML documents that go through the very same loader
and checks as the files under ``schemas/`` (so an error names ``overlay/<file>:line:col``), can be
exported to a directory for review in git, and read back from one. The YAML files are never edited.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from crm_meta.schema.loader import LoadedFile, _load_text

OVERLAY_DIR = "overlay"
FIELDS_FILE = "custom_fields.yaml"
ENTITIES_FILE = "custom_entities.yaml"
PLACEMENTS = ("list", "search", "filters")


@dataclass(frozen=True)
class CustomField:
    """A field an admin added to ``entity``; ``spec`` is its body in the dictionary language."""

    entity: str
    name: str
    spec: dict
    list: bool = False
    search: bool = False
    filters: bool = False

    @property
    def active(self) -> bool:
        return self.spec.get("active", True) is not False


@dataclass(frozen=True)
class CustomEntity:
    """A whole entity an admin added; ``spec`` is its body in the dictionary language."""

    name: str
    spec: dict


@dataclass(frozen=True)
class Overlay:
    fields: tuple[CustomField, ...] = ()
    entities: tuple[CustomEntity, ...] = ()

    # --- reading ---------------------------------------------------------------------------------
    def field(self, entity: str, name: str) -> CustomField | None:
        return next((f for f in self.fields if f.entity == entity and f.name == name), None)

    def entity(self, name: str) -> CustomEntity | None:
        return next((e for e in self.entities if e.name == name), None)

    def __bool__(self) -> bool:
        return bool(self.fields or self.entities)

    # --- changing (each returns a new overlay) -----------------------------------------------------
    def with_field(self, f: CustomField) -> "Overlay":
        if self.field(f.entity, f.name) is None:
            return replace(self, fields=self.fields + (f,))
        return replace(self, fields=tuple(f if (x.entity, x.name) == (f.entity, f.name) else x for x in self.fields))

    def without_field(self, entity: str, name: str) -> "Overlay":
        return replace(self, fields=tuple(x for x in self.fields if (x.entity, x.name) != (entity, name)))

    def with_entity(self, e: CustomEntity) -> "Overlay":
        if self.entity(e.name) is None:
            return replace(self, entities=self.entities + (e,))
        return replace(self, entities=tuple(e if x.name == e.name else x for x in self.entities))

    def without_entity(self, name: str) -> "Overlay":
        return replace(self, entities=tuple(x for x in self.entities if x.name != name),
                       fields=tuple(x for x in self.fields if x.entity != name))

    # --- the dictionary language --------------------------------------------------------------------
    def documents(self) -> dict[str, dict]:
        """File name → document, in the dictionary language."""
        docs: dict[str, dict] = {}
        if self.entities:
            docs[ENTITIES_FILE] = {"version": 1, "entities": {e.name: copy.deepcopy(e.spec) for e in self.entities}}
        if self.fields:
            extend: dict[str, dict] = {}
            for f in self.fields:
                body = extend.setdefault(f.entity, {"fields": {}})
                body["fields"][f.name] = copy.deepcopy(f.spec)
                for key in PLACEMENTS:
                    if getattr(f, key) and f.active:
                        body.setdefault(key, []).append(f.name)
            docs[FIELDS_FILE] = {"version": 1, "extend": extend}
        return docs

    def texts(self) -> dict[str, str]:
        header = ("# Changes admins made on the schema screens (crm_meta overlay); exported by\n"
                  "# `flask --app app crm schema export`, loaded back by `crm schema import`.\n")
        return {name: header + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, default_flow_style=False)
                for name, doc in self.documents().items()}

    def loaded_files(self) -> tuple[list[LoadedFile], list]:
        """The overlay as parsed dictionary files (with line/column marks) and any parse issues."""
        files, issues = [], []
        for name, text in self.texts().items():
            loaded, problems = _load_text(f"{OVERLAY_DIR}/{name}", text, yaml.SafeLoader)
            files.append(loaded)
            issues += problems
        return files, issues

    # --- storage rows ---------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        out = [{"kind": "entity", "entity": e.name, "name": e.name, "spec": e.spec, "placement": {},
                "position": n} for n, e in enumerate(self.entities)]
        out += [{"kind": "field", "entity": f.entity, "name": f.name, "spec": f.spec,
                 "placement": {k: getattr(f, k) for k in PLACEMENTS}, "position": n}
                for n, f in enumerate(self.fields)]
        return out

    @classmethod
    def from_rows(cls, rows) -> "Overlay":
        rows = sorted(rows, key=lambda r: (r["kind"], r["position"]))
        return cls(
            fields=tuple(CustomField(r["entity"], r["name"], dict(r["spec"]),
                                     **{k: bool((r["placement"] or {}).get(k)) for k in PLACEMENTS})
                         for r in rows if r["kind"] == "field"),
            entities=tuple(CustomEntity(r["name"], dict(r["spec"])) for r in rows if r["kind"] == "entity"))

    @classmethod
    def from_documents(cls, docs: list[dict]) -> "Overlay":
        """Read exported documents back (``entities:`` and ``extend:`` sections)."""
        fields: list[CustomField] = []
        entities: list[CustomEntity] = []
        for doc in docs:
            for name, spec in (doc.get("entities") or {}).items():
                entities.append(CustomEntity(name, spec))
            for ename, body in (doc.get("extend") or {}).items():
                for fname, spec in (body.get("fields") or {}).items():
                    fields.append(CustomField(ename, fname, spec,
                                              **{k: fname in (body.get(k) or ()) for k in PLACEMENTS}))
        return cls(tuple(fields), tuple(entities))


def export_overlay(overlay: Overlay, directory: str | Path, extra: dict[str, str] | None = None) -> list[Path]:
    """Write the overlay's documents (and ``extra`` name → text) into ``directory``; return the files."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in {**overlay.texts(), **(extra or {})}.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


@dataclass
class ImportedDirectory:
    overlay: Overlay
    files: list[LoadedFile] = field(default_factory=list)
    issues: list = field(default_factory=list)
    dictionary_items: dict[str, list[dict]] = field(default_factory=dict)


def read_directory(directory: str | Path) -> ImportedDirectory:
    """Parse an exported overlay directory (every ``*.yaml`` in it); problems come back as issues."""
    from crm_meta.schema.loader import load_files

    files, issues = load_files([directory])
    parsed = [f for f in files if f.parsed]
    items: dict[str, list[dict]] = {}
    docs = []
    for f in parsed:
        data = dict(f.data or {})
        for name, lst in (data.pop("dictionary_items", None) or {}).items():
            items.setdefault(name, []).extend(lst or [])
        f.data = data
        docs.append(data)
    return ImportedDirectory(Overlay.from_documents(docs), parsed, issues, items)


def field_spec(kind: str, label_zh: str, label_en: str, **options: Any) -> dict:
    """A field body from screen input: empty options are left out."""
    spec: dict[str, Any] = {"type": kind, "label": {"zh": label_zh, "en": label_en}}
    for key, value in options.items():
        if value not in (None, "", False) or (key == "active" and value is False):
            spec[key] = value
    return spec
