"""Checks of one field's declaration that go beyond the JSON Schema: names, applicable keys, limits,
references, autonumber formats and default values.

Every function here accepts whatever shape the YAML had: values the JSON Schema rejects are skipped
(that pass reports them), never trusted.
"""
from __future__ import annotations

import math
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Iterator, Protocol

from crm_meta.metadata.fieldtypes import (
    AUTONUMBER_TOKEN,
    EMAIL_PATTERN,
    PHONE_PATTERN,
    STRING_LENGTHS,
    URL_PATTERN,
    CustomType,
    FieldType,
    FieldTypes,
    field_types_of,
)
from crm_meta.metadata.model import RESERVED_FIELD_NAMES
from crm_meta.schema.reserved import reserved_reason
from crm_meta.schema.structure import IDENTIFIER, a, json_schema, show, suggest

Problem = tuple[tuple, bool, str]  # (path below the field, at the key?, message)

DEFAULT_PRECISION, DEFAULT_SCALE = 18, 2
BUILTIN_PATTERNS = {"phone": PHONE_PATTERN, "email": EMAIL_PATTERN, "url": URL_PATTERN}


class Lookup(Protocol):
    """What field checks need to know about the other declarations (None: cannot tell)."""

    def known(self, section: str, name: str) -> bool | None: ...
    def codes(self, dictionary: str) -> set[str] | None: ...
    def groups(self, dictionary: str) -> set[str] | None: ...
    def unknown(self, section: str, name: str) -> str: ...


def field_type(body: Any, types: FieldTypes | None = None) -> FieldType | None:
    """The field's type, when the declaration names a known one (``types``: the app's; None: built-in)."""
    return field_types_of(types).of(body)


def is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(IDENTIFIER.match(value))


def number(value: Any) -> int | float | None:
    """``value`` when it is a finite number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _applies_to(key: str, types: FieldTypes | None = None) -> str:
    names = [t.name for t in field_types_of(types) if key in t.keys]
    return f" (only for: {', '.join(names)})"


def field_problems(name: str, body: Any, lookup: Lookup, types: FieldTypes | None = None) -> Iterator[Problem]:
    """Everything wrong with field ``name`` beyond its JSON Schema shape (``types``: the app's field types)."""
    reason = reserved_reason(name, entity=False)
    if name in RESERVED_FIELD_NAMES:
        reason = f"'{name}' is a system field every entity has already"
    if reason:
        yield (), True, reason
    ftype = field_type(body, types)
    if ftype is None:
        return
    schema_keys = json_schema()["$defs"]["field"]["properties"]
    for key in body:
        if key in schema_keys and key not in ftype.keys:
            yield (key,), True, f"'{key}' does not apply to {a(ftype.name)} field{_applies_to(key, types)}"
    own = {k: v for k, v in body.items() if k in ftype.keys}
    yield from _references(own, ftype, lookup)
    yield from _limits(own, ftype)
    if ftype.name == "autonumber" and isinstance(own.get("format"), str):
        problem = autonumber_problem(own["format"])
        if problem:
            yield ("format",), False, problem
    if own.get("unique") is True and not ftype.can_be_unique:
        yield ("unique",), False, f"{a(ftype.name)} field cannot be unique"
    if own.get("readonly") is True and own.get("required") is True and own.get("default") is None \
            and ftype.name != "autonumber":
        yield ("readonly",), True, "a required read-only field needs a default (nobody can fill it in)"
    if own.get("default") is not None:
        problem = default_problem(ftype.base, own, lookup, ftype.length)
        custom = field_types_of(types).custom(ftype.name)
        if problem is None and custom is not None and ftype.storage in ("string", "text"):
            problem = custom_default_problem(custom, own["default"])
        if problem:
            yield ("default",), False, problem


def _references(body: dict, ftype: FieldType, lookup: Lookup) -> Iterator[Problem]:
    dname = body.get("dictionary")
    if is_name(dname):
        if lookup.known("dictionaries", dname) is False:
            yield ("dictionary",), False, lookup.unknown("dictionaries", dname)
        group = body.get("group")
        groups = lookup.groups(dname)
        if is_name(group) and groups is not None and group not in groups:
            found = f" (groups: {', '.join(sorted(groups))})" if groups else " (its items have no group)"
            yield ("group",), False, f"dictionary '{dname}' has no items in group '{group}'{found}"
    target = body.get("entity")
    if is_name(target) and lookup.known("entities", target) is False:
        yield ("entity",), False, lookup.unknown("entities", target)


def _limits(body: dict, ftype: FieldType) -> Iterator[Problem]:
    pattern = body.get("pattern")
    if isinstance(pattern, str) and pattern:
        try:
            re.compile(pattern)
        except re.error as exc:
            yield ("pattern",), False, f"invalid regular expression: {exc}"
    for key in ("min", "max"):
        if isinstance(body.get(key), float) and not math.isfinite(body[key]):
            yield (key,), False, f"{key} must be a finite number"
    low, high = number(body.get("min")), number(body.get("max"))
    if low is not None and high is not None and low > high:
        yield ("min",), False, f"min ({low}) is greater than max ({high})"
    shortest = number(body.get("min_length"))
    longest = number(body.get("length"))
    if shortest is not None:
        limit = longest if longest is not None else ftype.length
        what = "length" if longest is not None else "the default length"
        if limit is not None and shortest > limit:
            yield ("min_length",), False, f"min_length ({shortest}) is greater than {what} ({limit})"
    if ftype.base == "decimal":
        precision, scale = number(body.get("precision")), number(body.get("scale"))
        if scale is not None and scale > (precision if precision is not None else DEFAULT_PRECISION):
            yield ("scale",), False, f"scale ({scale}) is greater than precision ({precision or DEFAULT_PRECISION})"
        elif scale is None and precision is not None and precision < DEFAULT_SCALE:
            yield ("precision",), False, f"precision ({precision}) is smaller than the default scale " \
                                         f"({DEFAULT_SCALE}); give a scale too"


def autonumber_problem(fmt: str) -> str | None:
    """What is wrong with an autonumber format, or None."""
    rest = re.sub(AUTONUMBER_TOKEN, "", fmt)
    bad = re.search(r"\{[^{}]*\}?|\}", rest)
    if bad:
        return (f"unknown part {bad.group(0)!r} in the format (use {{YYYY}}, {{YY}}, {{MM}}, {{DD}}, "
                "{YYYYMM}, {YYYYMMDD} and one {seq:N})")
    seqs = re.findall(r"\{seq:(\d+)\}", fmt)
    if len(seqs) != 1:
        return f"the format needs exactly one {{seq:N}} part, found {len(seqs)} (e.g. C{{YYYYMMDD}}{{seq:3}})"
    if not 1 <= int(seqs[0]) <= 12:
        return f"the {{seq:N}} width must be between 1 and 12, not {int(seqs[0])}"
    if not re.fullmatch(r"[A-Za-z0-9_\-/.]*", rest):
        return "literal text in the format may hold only letters, digits and - _ / ."
    return None


def default_problem(tname: str, body: dict, lookup: Lookup, length: int | None = None) -> str | None:
    """What is wrong with the field's ``default``, or None (``tname``: a built-in type, or a plugin
    type's base; ``length``: the type's default maximum length)."""
    value = body["default"]
    if tname == "autonumber":
        return "an autonumber field cannot have a default (it is numbered on save)"
    if tname == "reference":
        return "a reference field cannot have a default"
    if tname == "user":
        return None if value == "current_user" else \
            f"the only default of a user field is 'current_user', not {show(value)}"
    if tname in ("date", "datetime"):
        return _date_problem(tname, value)
    if tname == "boolean":
        return None if isinstance(value, bool) else f"expected true or false, found {show(value)}"
    if tname == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected a whole number, found {show(value)}"
        return _range_problem(value, body)
    if tname in ("decimal", "money"):
        return _decimal_problem(value, body)
    if tname in ("enum", "multi_enum", "tags"):
        return _code_problem(tname, value, body, lookup)
    return _text_problem(tname, value, body, length)


def custom_default_problem(custom: CustomType, value: Any) -> str | None:
    """What a plugin type (normalise, pattern, check) says about a default that passed its base's checks."""
    try:
        if custom.normalize is not None and isinstance(value, str) and value.strip():
            value = custom.normalize(value.strip())
        refused = custom.refusal(value)
    except ValueError:
        refused = custom.messages()
    except Exception as exc:  # noqa: BLE001 - the plugin's function; reported, never a traceback
        return f"the check of the field type '{custom.name}' (plugin {custom.plugin or '?'}) failed on the " \
               f"default: {type(exc).__name__}: {exc}"
    return f"the default is refused by the field type '{custom.name}': {refused['en']}" if refused else None


def _date_problem(tname: str, value: Any) -> str | None:
    if value in ("now", "today") or isinstance(value, (date, datetime)):
        return None
    if isinstance(value, str):
        try:
            (date if tname == "date" else datetime).fromisoformat(value)
            return None
        except ValueError:
            pass
    example = "2024-05-01" if tname == "date" else "2024-05-01T09:00:00"
    return f"expected 'today', 'now' or an ISO {tname.replace('time', '-time')} such as {example}, found {show(value)}"


def _range_problem(value: Any, body: dict) -> str | None:
    low, high = number(body.get("min")), number(body.get("max"))
    if low is not None and value < low:
        return f"the default {value} is below min {low}"
    if high is not None and value > high:
        return f"the default {value} is above max {high}"
    return None


def _decimal_problem(value: Any, body: dict) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"expected a number, found {show(value)}"
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return f"expected a number, found {show(value)}"
    if not amount.is_finite():
        return f"expected a finite number, found {show(value)}"
    return _range_problem(amount, body)


def _code_problem(tname: str, value: Any, body: dict, lookup: Lookup) -> str | None:
    dname = body.get("dictionary")
    codes = lookup.codes(dname) if is_name(dname) else None
    values = value if isinstance(value, list) and tname != "enum" else [value]
    for v in values:
        if not isinstance(v, str):
            return f"expected a code of dictionary '{dname}' (text), found {show(v)}"
        if codes is not None and v not in codes:
            return f"'{v}' is not a code of dictionary '{dname}'{suggest(v, codes)}"
    return None


def _text_problem(tname: str, value: Any, body: dict, length: int | None = None) -> str | None:
    if not isinstance(value, str):
        return f"expected text, found {show(value)}"
    longest = number(body.get("length")) or length or STRING_LENGTHS.get(tname)
    if longest is not None and len(value) > longest:
        return f"the default is longer than {longest} characters"
    shortest = number(body.get("min_length"))
    if shortest is not None and len(value) < shortest:
        return f"the default is shorter than min_length {shortest}"
    pattern = body.get("pattern") if isinstance(body.get("pattern"), str) else BUILTIN_PATTERNS.get(tname)
    try:
        if pattern and not re.fullmatch(pattern, value):
            return "the default does not match the pattern"
    except re.error:
        return None  # reported on `pattern`
    return None
