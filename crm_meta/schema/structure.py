"""Check one file against the JSON Schema and word each failure for an admin, at its place in the file."""
from __future__ import annotations

import copy
import difflib
import json
import re
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator

import jsonschema

from crm_meta.errors import SchemaIssue
from crm_meta.schema.loader import LoadedFile, one_line

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

TYPE_WORDS = {
    "string": "text", "integer": "a whole number", "number": "a number", "boolean": "true or false",
    "object": "a mapping (key: value)", "array": "a list", "null": "nothing",
}

PATTERN_WORDS = {
    IDENTIFIER.pattern: "is not a valid name: use a lower-case letter, then lower-case letters, digits or _ "
                        "(at most 40 characters)",
    "^-?[a-z][a-z0-9_]{0,39}$": "is not a field name (with '-' in front for descending order)",
    "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": "is not a valid code: a letter or digit, then letters, digits, "
                                         "_ . or - (at most 64 characters)",
    "^fa-[a-z0-9-]+$": "is not a Font Awesome icon class such as 'fa-users'",
}

NEEDS = {"dictionary": "the dictionary to choose from", "entity": "the entity it points at",
         "format": "the number's format, e.g. C{YYYYMMDD}{seq:3}"}


@lru_cache(maxsize=1)
def json_schema() -> dict:
    """The JSON Schema of one dictionary file (shipped as package data)."""
    text = resources.files("crm_meta.schema").joinpath("dictionary.schema.json").read_text("utf-8")
    return json.loads(text)


def json_schema_for(types: tuple[str, ...] | None = None) -> dict:
    """The JSON Schema with ``types`` (an app's field type names, plugin types included) as the valid
    values of a field's ``type``; None: the built-in types."""
    schema = json_schema()
    if types is None or list(types) == schema["$defs"]["field"]["properties"]["type"]["enum"]:
        return schema
    schema = copy.deepcopy(schema)
    schema["$defs"]["field"]["properties"]["type"]["enum"] = list(types)
    return schema


@lru_cache(maxsize=32)  # one per set of field types (tests build apps with many plugin sets)
def _validator(types: tuple[str, ...] | None = None) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json_schema_for(types))


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def show(value: Any) -> str:
    """A value as an admin wrote it in YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, date):
        return repr(value.isoformat())
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def a(word: str) -> str:
    """``word`` with its indefinite article: 'an enum', 'a string'."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def suggest(word: Any, options) -> str:
    """`` (did you mean 'x'?)`` when ``word`` looks like a misspelling of one of ``options``."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def name_hint(name: Any) -> str:
    if not isinstance(name, str):
        return ""
    fixed = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower())
    return f" (try '{fixed}')" if fixed != name and IDENTIFIER.match(fixed) else ""


def _type_message(err: jsonschema.ValidationError) -> str:
    wanted = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
    words = [TYPE_WORDS.get(t, t) for t in wanted]
    expected = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    hint = " (put it in quotes to make it text)" if "string" in wanted and err.instance is not None \
        and not isinstance(err.instance, (dict, list, str)) else ""
    return f"expected {expected}, found {show(err.instance)}{hint}"


def _issues(err: jsonschema.ValidationError) -> Iterator[tuple[tuple, bool, str]]:
    """(path, at the key?, message) for one validation error."""
    path = tuple(err.absolute_path)
    kind, inst, value = err.validator, err.instance, err.validator_value
    if "propertyNames" in err.schema_path:  # a declared name (entity, field …) that is not an identifier
        yield path + (inst,), True, f"{show(inst)} {PATTERN_WORDS[IDENTIFIER.pattern]}{name_hint(inst)}"
    elif kind == "additionalProperties" and isinstance(inst, dict):
        allowed = sorted(err.schema.get("properties", {}))
        for extra in sorted(set(inst) - set(allowed)):
            hint = suggest(extra, allowed) or (f" (allowed: {', '.join(allowed)})" if allowed else "")
            yield path + (extra,), True, f"unknown key '{extra}'{hint}"
    elif kind == "required" and isinstance(inst, dict):
        for missing in value:
            if missing in inst:
                continue
            if missing in NEEDS and isinstance(inst.get("type"), str):
                yield path, True, f"{a(inst['type'])} field needs '{missing}' ({NEEDS[missing]})"
            else:
                yield path, True, f"missing required key '{missing}'"
    elif kind == "oneOf" and err.schema == json_schema()["$defs"]["label"]:
        if isinstance(inst, dict):  # explain what the mapping form lacks
            for sub in err.context:
                if sub.relative_schema_path and sub.relative_schema_path[0] == 1:
                    yield from _issues(sub)
        elif inst == "":
            yield path, False, "a label must not be empty"
        else:
            yield path, False, f"expected a label (text, or a mapping with 'zh' and 'en'), found {show(inst)}"
    elif kind == "type":
        yield path, False, _type_message(err)
    elif kind == "enum":
        yield path, False, f"{err.message}{suggest(inst, value)}"
    elif kind == "const":
        yield path, False, f"must be {show(value)}, found {show(inst)}"
    elif kind == "pattern":
        words = PATTERN_WORDS.get(value, f"does not match {value}")
        yield path, False, f"{show(inst)} {words}{name_hint(inst) if value == IDENTIFIER.pattern else ''}"
    elif kind in ("minLength", "minProperties", "minItems"):
        yield path, False, "must not be empty"
    elif kind == "minimum":
        yield path, False, f"{show(inst)} is below the minimum {value}"
    elif kind == "maximum":
        yield path, False, f"{show(inst)} is above the maximum {value}"
    elif kind == "uniqueItems" and isinstance(inst, list):
        seen: list[Any] = []
        for i, item in enumerate(inst):
            if item in seen:
                yield path + (i,), False, f"{show(item)} is listed twice"
            seen.append(item)
    else:
        yield path, False, err.message


def structure_issues(f: LoadedFile, types: tuple[str, ...] | None = None) -> list[SchemaIssue]:
    """Every place where ``f`` does not follow the JSON Schema (none for files that did not parse);
    ``types``: the names of the app's field types (None: the built-in ones)."""
    if not f.parsed or not isinstance(f.data, dict):
        return []
    issues: list[SchemaIssue] = []
    for err in _validator(tuple(types) if types is not None else None).iter_errors(f.data):
        for path, key, message in _issues(err):
            issue = SchemaIssue(f.locate(path, key=key), dotted(path), one_line(message))
            if issue not in issues:
                issues.append(issue)
    return issues
