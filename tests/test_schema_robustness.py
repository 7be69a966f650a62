"""No shape of YAML data makes the validator crash: every value of the default dictionary is replaced,
in turn, by values of the wrong shape (or removed), and each result must be a list of located issues."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from crm_meta.errors import SchemaIssue
from crm_meta.schema.loader import LoadedFile, load_files
from crm_meta.schema.validate import meaning_issues, structure_issues

DEFAULT_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SHAPE = re.compile(r"^[^:\n]+:[1-9][0-9]*:[1-9][0-9]*: \S[^\n]*$")
JUNK = [None, 7, -1.5, float("nan"), True, "x", "", "Bad Name", [], ["x", 3], {}, {"zh": 1}]
DELETE = object()
MUTATED_FILES = ("customer.yaml", "menus.yaml", "feedback.yaml")
# one field of each kind (every field is still replaced and removed whole)
SAMPLE_FIELDS = {"customer_no", "name", "customer_type", "credit_code", "annual_revenue", "owner", "tags",
                 "customer", "satisfaction", "feedback_at", "priority"}


def _set(data: dict, path: tuple, value: object) -> dict:
    data = copy.deepcopy(data)
    target = data
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


def _mutations(f: LoadedFile):
    for n, path in enumerate(sorted(f.value_marks, key=str)):
        if not path or (len(path) > 4 and path[2] == "fields" and path[3] not in SAMPLE_FIELDS):
            continue
        width = len(JUNK) if len(path) <= 4 else 6
        values = [JUNK[(n + i * 5) % len(JUNK)] for i in range(width)]
        if isinstance(path[-1], str):
            values = values + [DELETE]
        for value in values:
            yield path, value


@pytest.fixture(scope="module")
def default_files() -> list[LoadedFile]:
    files, issues = load_files([DEFAULT_SCHEMAS])
    assert not issues
    return files


@pytest.mark.parametrize("name", MUTATED_FILES)
def test_wrong_shapes_never_crash_the_validator(default_files: list[LoadedFile], name: str) -> None:
    index = next(i for i, f in enumerate(default_files) if f.path.endswith(name))
    original = default_files[index]
    runs = 0
    for path, value in _mutations(original):
        mutated = LoadedFile(original.path, _set(original.data, path, value),
                             original.value_marks, original.key_marks)
        files = default_files[:index] + [mutated] + default_files[index + 1:]
        # the JSON Schema pass is slow and sturdy: sample it; the meaning checks run every time
        issues = (structure_issues(mutated) if runs % 7 == 0 else []) + meaning_issues(files)
        runs += 1
        for issue in issues:
            assert isinstance(issue, SchemaIssue)
            assert SHAPE.match(str(issue)), str(issue)
            assert "internal error" not in issue.message, f"{path} = {value!r}: {issue}"
        if value == 7 and runs % 7 == 1 and path[-1] in ("type", "label", "items", "fields", "code", "entity", "dictionary"):
            assert issues, f"{path} = {value!r} was accepted"
    assert runs > 100
