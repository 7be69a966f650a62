"""The field types of the dictionary language and what each one means for storage and input.

The built-in types are ``FIELD_TYPES``; an app's types are a ``FieldTypes``: the built-in ones (the
plugin ``crm_meta.builtin`` registers them through the hook ``crm_field_types``) plus the
``CustomType``s its plugins add. A custom type is built on a built-in *base* type whose storage,
column, form widget and REST schema it reuses, and adds a pattern, a normaliser and a check.
Pure Python: nothing here imports the web or the database layer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping

from crm_meta.errors import PluginError

COMMON_KEYS = frozenset({"type", "label", "help", "required", "unique", "indexed", "readonly", "default",
                         "needs_approval", "active", "renamed_from", "classes"})

STRING_LENGTHS = {"string": 255, "phone": 32, "email": 254, "url": 2048, "autonumber": 64}


@dataclass(frozen=True)
class FieldType:
    """What the engine needs to know about a type: its storage kind and which keys it accepts."""

    name: str
    storage: str  # string | text | integer | decimal | boolean | date | datetime | code | codes | fk_entity | fk_user
    keys: frozenset[str]
    text_search: bool = False  # may appear in an entity's `search` list
    can_be_unique: bool = True
    length: int | None = None  # string storage: the default maximum length
    base: str = ""  # the built-in type whose behaviour it has: its own name, or a plugin type's base

    def __post_init__(self) -> None:
        if not self.base:
            object.__setattr__(self, "base", self.name)


def _t(name: str, storage: str, extra: set[str] = frozenset(), **kw) -> FieldType:
    return FieldType(name, storage, COMMON_KEYS | frozenset(extra), length=STRING_LENGTHS.get(name), **kw)


FIELD_TYPES: dict[str, FieldType] = {
    t.name: t
    for t in (
        _t("string", "string", {"length", "min_length", "pattern", "message", "mask"}, text_search=True),
        _t("text", "text", {"min_length", "mask"}, text_search=True, can_be_unique=False),
        _t("integer", "integer", {"min", "max"}),
        _t("decimal", "decimal", {"min", "max", "precision", "scale"}),
        _t("money", "decimal", {"min", "max"}),
        _t("boolean", "boolean", can_be_unique=False),
        _t("date", "date"),
        _t("datetime", "datetime"),
        _t("enum", "code", {"dictionary"}),
        _t("multi_enum", "codes", {"dictionary"}, can_be_unique=False),
        _t("tags", "codes", {"dictionary", "group"}, can_be_unique=False),
        _t("reference", "fk_entity", {"entity"}),
        _t("user", "fk_user"),
        _t("phone", "string", {"pattern", "message", "mask"}, text_search=True),
        _t("email", "string", {"mask"}, text_search=True),
        _t("url", "string", text_search=True),
        _t("autonumber", "string", {"format"}, text_search=True),
    )
}

PHONE_PATTERN = r"^\+?[0-9][0-9 \-]{5,30}[0-9]$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"
DATE_PARTS = ("YYYYMMDD", "YYYYMM", "YYYY", "YY", "MM", "DD")
AUTONUMBER_TOKEN = r"\{(YYYYMMDD|YYYYMM|YYYY|YY|MM|DD|seq:(\d{1,2}))\}"

# -- field types added by plugins (hook crm_field_types) ------------------------------------------

#: The built-in types a plugin type may be built on (types needing a dictionary, an entity or a
#: format — enum, multi_enum, tags, reference, user, autonumber — cannot be a base).
BASES = ("string", "text", "integer", "decimal", "money", "boolean", "date", "datetime", "phone", "email", "url")
TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def _texts(value: Any, fallback: str) -> dict[str, str]:
    """``{"zh": …, "en": …}`` of a text, a ``{zh, en}`` mapping or a Label-like object."""
    if isinstance(value, Mapping):
        zh, en = value.get("zh"), value.get("en")
    elif value is not None and hasattr(value, "zh") and hasattr(value, "en"):
        zh, en = value.zh, value.en
    else:
        zh = en = value
    zh, en = (str(zh) if zh not in (None, "") else None), (str(en) if en not in (None, "") else None)
    return {"zh": zh or en or fallback, "en": en or zh or fallback}


@dataclass(frozen=True)
class CustomType:
    """A field type a plugin adds (hook ``crm_field_types``), built on the built-in type ``base``.

    A field ``type: <name>`` is stored, edited and served like a ``base`` field (column, form widget,
    REST and OpenAPI schema); on every create and update (screens, REST, imports) its value is also
    ``normalize``d, then matched against ``pattern`` and passed to ``check``:

    * ``name`` — the type's name in the dictionary (a lower-case identifier, not a built-in type's);
    * ``base`` — one of ``BASES``;
    * ``label`` — text or ``{"zh": …, "en": …}``, used in the default message;
    * ``length`` — string bases: the default maximum length (a field's ``length`` still wins);
    * ``pattern`` — text bases: a regular expression the whole (normalised) value must match;
    * ``message`` — text or ``{"zh", "en"}`` shown when ``pattern`` does not match or ``normalize``
      raises ``ValueError`` (default: "不是有效的<label> / is not a valid <label>");
    * ``normalize(text) -> value`` — called with the submitted text (stripped, not empty) before the
      base type's checks; what it returns is checked and stored. Values that are not text (JSON
      numbers …) go to the base type unchanged. Raise ``ValueError`` to refuse the value;
    * ``check(value) -> message | None`` — called with the converted value (``str``, ``int``,
      ``Decimal``, ``date`` … of the base); return ``None`` (or ``True``) to accept, a text or
      ``{"zh", "en"}`` to refuse with that message (``False``: with ``message``);
    * ``text_search`` — may be in an entity's ``search`` list (default: as the base);
    * ``keys`` — the declaration keys a field of this type accepts besides the common ones (label,
      required, default …); default: the base's. Only keys of the base are possible.
    """

    name: str
    base: str
    label: Any = None
    length: int | None = None
    pattern: str | None = None
    message: Any = None
    normalize: Callable[[str], Any] | None = None
    check: Callable[[Any], Any] | None = None
    text_search: bool | None = None
    keys: Iterable[str] | None = None
    plugin: str = field(default="", compare=False)  # filled in when the hook's results are collected
    kind: FieldType = field(init=False, compare=False, repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(f"field type {self.name!r}: {problem}")
        base = FIELD_TYPES[self.base]
        own_keys = base.keys if self.keys is None else COMMON_KEYS | frozenset(self.keys)
        if self.keys is not None:
            object.__setattr__(self, "keys", frozenset(self.keys))
        object.__setattr__(self, "kind", FieldType(
            self.name, base.storage, own_keys,
            text_search=base.text_search if self.text_search is None else bool(self.text_search),
            can_be_unique=base.can_be_unique, length=self.length or base.length, base=base.name))

    def __hash__(self) -> int:  # label/message may be dicts
        return hash((self.name, self.base, self.length, self.pattern))

    def _problem(self) -> str | None:
        if not isinstance(self.name, str) or not TYPE_NAME.match(self.name):
            return "the name must be a lower-case identifier (a letter, then letters, digits or _)"
        if self.name in FIELD_TYPES:
            return "the name is a built-in type's"
        if self.base not in BASES:
            return f"base must be one of {', '.join(BASES)}, not {self.base!r}"
        storage = FIELD_TYPES[self.base].storage
        if self.length is not None and (storage != "string" or isinstance(self.length, bool)
                                        or not isinstance(self.length, int) or not 1 <= self.length <= 4000):
            return "length is for string bases only, a whole number from 1 to 4000"
        if self.pattern is not None:
            if storage not in ("string", "text"):
                return "pattern is for text bases only (string, text, phone, email, url)"
            try:
                re.compile(self.pattern)
            except (re.error, TypeError) as exc:
                return f"invalid pattern: {exc}"
        for hook in ("normalize", "check"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                return f"{hook} must be a function"
        if self.keys is not None:
            if isinstance(self.keys, str):
                return "keys must be a list of key names"
            extra = sorted(set(self.keys) - FIELD_TYPES[self.base].keys)
            if extra:
                return f"keys {', '.join(extra)} do not apply to its base {self.base}"
        return None

    def messages(self) -> dict[str, str]:
        """The message of a refused value, ``{"zh": …, "en": …}``."""
        label = _texts(self.label, self.name)
        return _texts(self.message, "") if self.message else \
            {"zh": f"不是有效的{label['zh']}", "en": f"is not a valid {label['en']}"}

    def refusal(self, value: Any) -> dict[str, str] | None:
        """Why ``value`` (converted by the base type, normalised) is refused, or None when it passes."""
        if self.pattern is not None and isinstance(value, str) and not re.fullmatch(self.pattern, value):
            return self.messages()
        if self.check is not None:
            said = self.check(value)
            if said is False:
                return self.messages()
            if said not in (None, "", True):
                return _texts(said, self.name)
        return None


class FieldTypes:
    """The field types of one app by name: the built-in ones and its plugins' ``CustomType``s.

    Built from the results of the hook ``crm_field_types`` (``Plugins.field_types()``); two plugins
    declaring the same name stop the app with a ``PluginError`` naming both.
    """

    def __init__(self, types: Iterable[FieldType | CustomType] = (), plugin: str = ""):
        self._kinds: dict[str, FieldType] = {}
        self._custom: dict[str, CustomType] = {}
        self._plugins: dict[str, str] = {}
        for t in types:
            self._add(plugin, t)

    @classmethod
    def collect(cls, results: Iterable[tuple[str, Iterable[Any] | None]]) -> FieldTypes:
        """The types of ``(plugin, types)`` pairs, as the hook returned them."""
        out = cls()
        for plugin, types in results:
            if types is None:
                continue
            if isinstance(types, (FieldType, CustomType, str)) or not isinstance(types, Iterable):
                raise PluginError(plugin, f"crm_field_types must return a list of field types, not {types!r}",
                                  hook="crm_field_types")
            for t in types:
                out._add(plugin, t)
        return out

    def _add(self, plugin: str, t: Any) -> None:
        if isinstance(t, CustomType):
            if plugin and t.plugin != plugin:
                t = replace(t, plugin=plugin)
            kind = t.kind
        elif isinstance(t, FieldType) and FIELD_TYPES.get(t.name) == t:
            kind = t
        else:
            raise PluginError(plugin or "?", f"crm_field_types returned {t!r}, not a "
                              "crm_meta.metadata.fieldtypes.CustomType", hook="crm_field_types")
        if kind.name in self._kinds:
            other = self._plugins[kind.name]
            what = "a built-in type" if kind.name in FIELD_TYPES and isinstance(t, CustomType) else \
                f"already added by plugin '{other}'"
            raise PluginError(plugin or "?", f"the field type '{kind.name}' is {what}; choose another name",
                              hook="crm_field_types")
        self._kinds[kind.name] = kind
        self._plugins[kind.name] = plugin
        if isinstance(t, CustomType):
            self._custom[kind.name] = t

    def with_builtins(self, plugin: str = "") -> FieldTypes:
        """These types, plus the built-in ones they lack (first)."""
        out = FieldTypes()
        for name, kind in FIELD_TYPES.items():
            out._add(self._plugins.get(name, plugin), self._kinds.get(name, kind))
        for name, kind in self._kinds.items():
            if name not in out._kinds:
                out._add(self._plugins[name], self._custom.get(name, kind))
        return out

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._kinds)

    @property
    def custom_types(self) -> tuple[CustomType, ...]:
        return tuple(self._custom.values())

    def get(self, name: Any) -> FieldType | None:
        return self._kinds.get(name) if isinstance(name, str) else None

    def custom(self, name: Any) -> CustomType | None:
        return self._custom.get(name) if isinstance(name, str) else None

    def plugin_of(self, name: str) -> str | None:
        return self._plugins.get(name)

    def of(self, body: Any) -> FieldType | None:
        """The type a field declaration names, when this app knows it."""
        return self.get(body.get("type")) if isinstance(body, dict) else None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[FieldType]:
        return iter(self._kinds.values())

    def __repr__(self) -> str:
        return f"FieldTypes({', '.join(self._kinds)})"


BUILTIN_TYPES = FieldTypes(FIELD_TYPES.values(), plugin="crm_meta.builtin")


def field_types_of(value: FieldTypes | Iterable[CustomType] | None) -> FieldTypes:
    """An app's types from what callers pass: None (the built-in types), a ``FieldTypes``, or
    ``CustomType``s to add to the built-in ones."""
    if value is None:
        return BUILTIN_TYPES
    if isinstance(value, FieldTypes):
        return value
    return FieldTypes(list(FIELD_TYPES.values()) + list(value), plugin="")
