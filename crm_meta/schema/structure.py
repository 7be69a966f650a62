"""Check one file against the JSON Schema and word each failure for an admin, at its place in the file."""
from __future__ import annotations

import copy
import difflib
import json
import re
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Iterator

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


# -- the fast pre-check --------------------------------------------------------------------------
# jsonschema walks a 100-entity file in ~0.3 s (its descend/evolve per node); the same schema compiled
# to Python code by fastjsonschema says "valid" in ~0.02 s. It only answers valid / not valid: a file
# it accepts has no structure issue; any other answer (invalid, or an error inside it) sends the file
# to jsonschema, which words every issue exactly as before. So the pre-check must give jsonschema's
# answer for every value YAML can produce, also inside not / if / oneOf, where a stricter test would
# accept more: it is compiled only from the keywords below, rewritten where fastjsonschema differs
# (see _fast_form), and a schema with any other keyword gets no pre-check at all.
# (fastjsonschema's "array" also takes tuples and its "number" no Fraction: YAML gives neither.)
_SUBSCHEMA = {"additionalProperties", "propertyNames", "items", "not", "if", "then", "else"}
_SUBSCHEMA_LIST = {"allOf", "anyOf", "oneOf"}
_SUBSCHEMA_MAP = {"properties", "$defs"}
_AS_THEY_ARE = {"required", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "minProperties",
                "maxProperties"}
_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "examples", "default", "deprecated",
                "readOnly", "writeOnly"}
_JSON_TYPES = {"null", "boolean", "integer", "number", "string", "array", "object"}


class _Unsupported(Exception):
    """The schema uses a keyword (or form of one) the pre-check does not cover."""


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


def _fast_form(node: Any) -> dict | bool:
    """``node`` (a subschema) as fastjsonschema must see it to answer as jsonschema does.

    Annotations are dropped (they would be copied into the generated code); ``const`` becomes a
    one-item ``enum`` (the same test there; its ``const`` breaks with ``detailed_exceptions=False``);
    a ``$ref`` with siblings becomes an ``allOf`` (fastjsonschema would ignore the siblings); a
    pattern's final ``$`` becomes ``\\n?$`` (fastjsonschema turns ``$`` into end-of-text, Python's
    ``$`` also matches before a final newline); ``minimum``/``maximum`` let booleans through (for
    jsonschema a boolean is not a number, fastjsonschema would compare it as 0/1)."""
    if isinstance(node, bool):  # true: anything; false: nothing
        return node
    if not isinstance(node, dict) or ("const" in node and "enum" in node):
        raise _Unsupported(f"subschema {node!r}")
    out: dict[str, Any] = {}
    bounds: list[dict] = []
    for key, value in node.items():
        if key in _ANNOTATIONS:
            continue
        if key in _SUBSCHEMA:
            out[key] = _fast_form(value)
        elif key in _SUBSCHEMA_LIST and isinstance(value, list):
            out[key] = [_fast_form(v) for v in value]
        elif key in _SUBSCHEMA_MAP and isinstance(value, dict):
            out[key] = {name: _fast_form(v) for name, v in value.items()}
        elif key == "$ref" and isinstance(value, str) and value.startswith("#/"):
            out[key] = value
        elif key == "const" and _scalar(value):
            out["enum"] = [value]
        elif key == "enum" and isinstance(value, list) and all(_scalar(v) for v in value):
            out[key] = list(value)
        elif key == "type" and all(t in _JSON_TYPES for t in (value if isinstance(value, list) else [value])):
            out[key] = value
        elif key == "pattern" and isinstance(value, str) and "$" not in value[:-1] and not value.endswith("\\$"):
            out[key] = value[:-1] + r"\n?$" if value.endswith("$") else value
        elif key in ("minimum", "maximum") and isinstance(value, (int, float)) and not isinstance(value, bool):
            bounds.append({key: value})
        elif key in _AS_THEY_ARE:
            out[key] = value
        else:
            raise _Unsupported(f"keyword {key!r}")
    if bounds:
        out.setdefault("allOf", []).extend({"anyOf": [{"type": "boolean"}, b]} for b in bounds)
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        defs = {"$defs": out.pop("$defs")} if "$defs" in out else {}  # refs point into the root's $defs
        out = {**defs, "allOf": [{"$ref": ref}, out]}
    return out


def _compile_fast(schema: dict) -> Callable[[Any], Any] | None:
    """``schema`` compiled by fastjsonschema (None when it cannot be: then jsonschema does all)."""
    try:
        import fastjsonschema
    except ImportError:  # pragma: no cover - a pinned dependency; jsonschema alone gives the same issues
        return None
    try:
        definition = _fast_form(schema)
        return fastjsonschema.compile(definition, use_default=False, use_formats=False, detailed_exceptions=False)
    except Exception:  # noqa: BLE001 - _Unsupported, or a schema fastjsonschema cannot compile
        return None


@lru_cache(maxsize=32)  # like _validator: one per set of field types, compiled once per process
def _fast_validator(types: tuple[str, ...] | None = None) -> Callable[[Any], Any] | None:
    return _compile_fast(json_schema_for(types))


def passes_fast_check(data: Any, types: tuple[str, ...] | None = None) -> bool:
    """True when the compiled pre-check accepts ``data`` (then jsonschema finds nothing either)."""
    check = _fast_validator(types)
    if check is None:
        return False
    try:
        check(data)
    except Exception:  # noqa: BLE001 - invalid, or data the generated code cannot handle: ask jsonschema
        return False
    return True


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
    types = tuple(types) if types is not None else None
    if passes_fast_check(f.data, types):
        return []
    issues: list[SchemaIssue] = []
    for err in _validator(types).iter_errors(f.data):
        for path, key, message in _issues(err):
            issue = SchemaIssue(f.locate(path, key=key), dotted(path), one_line(message))
            if issue not in issues:
                issues.append(issue)
    return issues
