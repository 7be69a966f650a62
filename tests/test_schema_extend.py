"""`extend:` adds fields to an entity declared in another file (how plugins add fields)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from crm_meta.errors import SchemaIssue
from crm_meta.schema import load_registry
from crm_meta.schema.loader import LoadedFile, load_files
from crm_meta.schema.validate import meaning_issues, structure_issues

DEFAULT_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


def test_added_fields_join_lists_and_the_last_form_section(tmp_path):
    ext = _write(tmp_path / "a", "vip.yaml", """\
        version: 1
        extend:
          customer:
            fields:
              vip: {type: boolean, default: false, label: VIP}
              vip_note: {type: string, length: 40, label: VIP note}
            list: [vip]
            search: [vip_note]
            filters: [vip]
        """)
    _write(tmp_path / "b", "more.yaml", """\
        version: 1
        extend:
          customer:
            fields:
              wechat: {type: string, label: WeChat}
            form:
              - label: {zh: 社交, en: Social}
                fields: [wechat]
        """)
    base = load_registry([DEFAULT_SCHEMAS]).entity("customer")
    entity = load_registry([DEFAULT_SCHEMAS, ext, tmp_path / "b"]).entity("customer")
    assert [f.name for f in entity.user_fields] == [f.name for f in base.user_fields] + ["vip", "vip_note", "wechat"]
    assert entity.list_fields == base.list_fields + ("vip",)
    assert entity.search_fields == base.search_fields + ("vip_note",)
    assert entity.filter_fields == base.filter_fields + ("vip",)
    assert len(entity.form) == len(base.form) + 1
    assert entity.form[len(base.form) - 1].fields == base.form[-1].fields + ("vip", "vip_note")  # loose ones
    assert entity.form[-1].fields == ("wechat",) and entity.form[-1].label.en == "Social"
    assert entity.field("vip").source.path.endswith("vip.yaml")


def test_an_entity_with_default_lists_and_form(tmp_path):
    _write(tmp_path, "base.yaml", """\
        version: 1
        entities:
          thing:
            label: Thing
            fields:
              a: {type: string, label: A}
              b: {type: string, label: B}
        """)
    plain = load_registry([tmp_path])
    _write(tmp_path, "z_ext.yaml", """\
        version: 1
        extend:
          thing:
            fields:
              cc: {type: string, label: C}
        """)
    extended = load_registry([tmp_path]).entity("thing")
    assert extended.list_fields == ("a", "b") and extended.search_fields == ("a", "b")  # defaults: own fields
    assert extended.form_fields == ("a", "b", "cc")
    assert plain.digest != load_registry([tmp_path]).digest  # the start-up migration runs


def test_files_without_extend_keep_their_digest():
    """Supporting `extend` must not make existing databases migrate again: same formula as before."""
    import json

    from crm_meta.metadata.build import _json_default, digest_of

    files, _ = load_files([DEFAULT_SCHEMAS])
    docs = [{k: (f.data or {}).get(k) for k in ("menus", "dictionaries", "entities")}
            | {k: f.data[k] for k in ("roles", "pipelines") if (f.data or {}).get(k)} for f in files]
    docs.sort(key=lambda d: json.dumps(d, sort_keys=True, default=_json_default))
    assert load_registry([DEFAULT_SCHEMAS]).digest == digest_of(docs)


@pytest.mark.parametrize("junk", [5, "x", [], {"customer": 5}, {"customer": {"fields": 5}},
                                  {"customer": {"fields": {"x": 5}, "list": "x", "form": [5, {"fields": 3}]}},
                                  {"customer": {"fields": {"x": {"type": "string", "label": "X"}},
                                                "form": [{"label": "S", "fields": ["x", "x", 7]}]}},
                                  {"Bad Name": {"fields": {}}}])
def test_odd_shapes_are_reported_never_crash(junk):
    files, _ = load_files([DEFAULT_SCHEMAS])
    odd = LoadedFile("schemas/odd.yaml", {"version": 1, "extend": junk}, {(): (1, 1)}, {})
    issues = structure_issues(odd) + meaning_issues(files + [odd])
    assert issues and all(isinstance(i, SchemaIssue) for i in issues)
    assert not any("internal error" in i.message for i in issues), issues
