"""The compiled pre-check (fastjsonschema) in front of jsonschema: it may only ever skip jsonschema for a
file jsonschema finds nothing wrong with, so every structure issue keeps its exact wording and place."""
from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import pytest
import yaml

from crm_meta.metadata.fieldtypes import field_types_of
from crm_meta.schema import structure
from crm_meta.schema.loader import LoadedFile, _load_text, load_files
from crm_meta.schema.structure import _fast_form, _fast_validator, _validator, passes_fast_check, structure_issues

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [ROOT / "schemas", *sorted(ROOT.glob("plugins/*/**/schemas"))]  # the default + plugins' files
JUNK = [None, 7, 1.0, -1, 0, 2.5, float("nan"), True, False, "x", "", "Bad Name", "abc\n", "fa-x\n",
        date(2024, 1, 2), [], ["x", 3], ["x", "x"], {}, {"zh": 1}, {"zh": "a", "en": "b"}, {"type": "string"}]


class _Deleted:
    def __repr__(self) -> str:
        return "<key removed>"


DELETE = _Deleted()


def _without_precheck(f: LoadedFile, types=None) -> list:
    """structure_issues as it was before the pre-check: jsonschema alone."""
    saved = structure.passes_fast_check
    structure.passes_fast_check = lambda *a, **k: False
    try:
        return structure_issues(f, types)
    finally:
        structure.passes_fast_check = saved


def _jsonschema_clean(data, types=None) -> bool:
    return next(iter(_validator(types).iter_errors(data)), None) is None


@pytest.fixture(scope="module")
def shipped_types() -> tuple[str, ...]:
    """The field type names of an app with every shipped plugin (crm_birthday adds wechat_id)."""
    from crm_meta.plugins import load_plugins

    return load_plugins({"CRM_PLUGINS": "crm_birthday,crm_lifecycle"}).field_types().names


@pytest.fixture(scope="module")
def shipped_files() -> list[LoadedFile]:
    files, issues = load_files(SHIPPED)
    assert not issues and len(files) >= 10
    return files


def test_the_shipped_schema_compiles_to_a_pre_check() -> None:
    assert _fast_validator(None) is not None
    with_plugin_type = field_types_of(None).names + ("birthday",)
    assert _fast_validator(with_plugin_type) is not None


def test_every_shipped_dictionary_file_passes_both(shipped_files: list[LoadedFile], shipped_types) -> None:
    assert "wechat_id" in shipped_types
    for f in shipped_files:
        assert passes_fast_check(f.data, shipped_types), f.path
        assert _jsonschema_clean(f.data, shipped_types), f.path


def test_the_pre_check_never_accepts_what_jsonschema_rejects(shipped_files: list[LoadedFile], shipped_types) -> None:
    """Every value of every shipped file is replaced in turn by a few values of other shapes (or removed)."""
    accepted = rejected = 0
    for f in shipped_files:
        for n, path in enumerate(sorted(f.value_marks, key=str)):
            if not path:
                continue
            parent = f.data
            for step in path[:-1]:
                parent = parent[step]
            last = path[-1]
            original = parent[last]
            values = [JUNK[(n + i * 5) % len(JUNK)] for i in range(4)]  # a different few at each place
            for value in values + ([DELETE] if isinstance(last, str) else []):
                if value is DELETE:
                    del parent[last]
                else:
                    parent[last] = value
                try:
                    if passes_fast_check(f.data, shipped_types):
                        accepted += 1
                        assert _jsonschema_clean(f.data, shipped_types), f"{f.path}: {path} = {value!r} skipped jsonschema"
                    else:
                        rejected += 1
                finally:
                    parent[last] = original  # (a deleted key comes back last: order does not matter here)
    assert rejected > 5_000 and accepted > 500, (accepted, rejected)


@pytest.mark.parametrize("text, expected", [
    ("version: true\n", ["thing.yaml:1:10: version: must be 1, found true"]),
    ("version: 1.5\n", ["thing.yaml:1:10: version: must be 1, found 1.5"]),
    ("menus:\n  Main:\n    label: M\n", None),
    ("menus:\n  main:\n    label: M\n    icon: users\n", None),
    ("menus:\n  main:\n    label: {zh: 主}\n", None),
    ("entities:\n  thing:\n    label: T\n    fields:\n      name: {type: strin, label: N}\n", None),
    ("entities:\n  thing:\n    label: T\n    fields:\n      name: {type: birthday, label: N}\n", None),
    ("entities:\n  thing:\n    label: T\n    fields:\n      c: {type: enum, label: C}\n", None),
    ("dictionaries:\n  d:\n    label: D\n    items: [{code: a, label: A}, {code: a, label: A, extra: 1}]\n", None),
])
def test_invalid_files_keep_the_exact_jsonschema_issues(text: str, expected: list[str] | None) -> None:
    loaded, problems = _load_text("thing.yaml", text, yaml.SafeLoader)
    assert not problems and loaded.parsed
    assert not passes_fast_check(loaded.data)
    issues = structure_issues(loaded)
    assert issues and issues == _without_precheck(loaded)
    if expected is not None:
        assert [str(i) for i in issues] == expected


def test_a_plugin_type_is_valid_only_for_the_app_that_has_it() -> None:
    loaded, _ = _load_text("thing.yaml", "entities:\n  thing:\n    label: T\n    fields:\n"
                           "      born: {type: birthday, label: B}\n", yaml.SafeLoader)
    with_plugin = field_types_of(None).names + ("birthday",)
    assert passes_fast_check(loaded.data, with_plugin) and structure_issues(loaded, with_plugin) == []
    issues = structure_issues(loaded)
    assert issues == _without_precheck(loaded) and "'birthday' is not one of" in issues[0].message


def test_a_final_newline_is_judged_as_jsonschema_does() -> None:
    """Python's `$` also matches before a final newline (fastjsonschema alone would read it as end of
    text): the pre-check accepts what jsonschema accepts, and the file has no issue, as before."""
    data = {"menus": {"main": {"label": "M", "icon": "fa-users\n"}}}
    assert passes_fast_check(data) and _jsonschema_clean(data)
    assert structure_issues(LoadedFile("thing.yaml", data)) == []


LABEL = {"$ref": "#/$defs/label", "$defs": {"label": structure.json_schema()["$defs"]["label"]}}
SMALL_SCHEMAS = [
    {"pattern": "^[a-z]+$"}, {"not": {"pattern": "^a$"}}, {"oneOf": [{"pattern": "^a$"}, {"pattern": "^a\n$"}]},
    {"minimum": 0}, {"maximum": 0}, {"not": {"minimum": 1}}, {"oneOf": [{"type": "boolean"}, {"maximum": 1}]},
    {"const": 1}, {"not": {"const": 1}}, {"enum": [1, "a", None, True]}, {"not": {"enum": [0, False]}},
    {"type": "integer"}, {"type": "number"}, {"type": ["string", "number", "boolean", "null"]},
    {"uniqueItems": True}, {"if": {"const": "x"}, "then": False}, {"required": ["zh"], "minProperties": 1},
    {"minLength": 1}, {"minItems": 1, "items": {"type": "string"}}, {"propertyNames": {"pattern": "^z"}},
    {"$ref": "#/$defs/label", "minLength": 2, "$defs": LABEL["$defs"]}, LABEL,
]
VALUES = JUNK + ["a", "a\n", "a\n\n", "\na", "zh", 1, 0.0, -0.5, [1, True], [1, 1.0], [0, False],
                 [{"a": 1}, {"a": 1}], [[1], [True]], {"zh": "a"}, {"en": "b"}]


@pytest.mark.parametrize("schema", SMALL_SCHEMAS, ids=[str(i) for i in range(len(SMALL_SCHEMAS))])
def test_the_pre_check_answers_as_jsonschema_does(schema: dict) -> None:
    import jsonschema

    fast, slow = structure._compile_fast(schema), jsonschema.Draft202012Validator(schema)
    assert fast is not None
    for value in VALUES:
        try:
            fast(value)
            accepted = True
        except Exception:  # noqa: BLE001
            accepted = False
        assert accepted == slow.is_valid(value), f"{schema} on {value!r}"


def test_keywords_the_pre_check_does_not_cover_turn_it_off() -> None:
    assert _fast_form({"$ref": "#/$defs/a", "minLength": 1}) == {"allOf": [{"$ref": "#/$defs/a"}, {"minLength": 1}]}
    assert _fast_form({"const": 1, "description": "d"}) == {"enum": [1]}
    assert _fast_form({"properties": {"description": {"type": "string"}}}) == \
        {"properties": {"description": {"type": "string"}}}
    for unsupported in ({"prefixItems": [{}]}, {"unevaluatedProperties": False}, {"items": [{}]},
                        {"$ref": "other.json#/a"}, {"const": {"a": 1}}, {"dependentRequired": {}}):
        with pytest.raises(structure._Unsupported):
            _fast_form(unsupported)


def test_nan_and_dates_are_judged_like_jsonschema() -> None:
    for value in (float("nan"), math.inf, date(2024, 1, 1)):
        data = {"menus": {"main": {"label": "M", "order": value}}}
        assert not passes_fast_check(data) or _jsonschema_clean(data)
