"""The field types of the dictionary language and what each one means for storage and input."""
from __future__ import annotations

from dataclasses import dataclass

COMMON_KEYS = frozenset({"type", "label", "help", "required", "unique", "indexed", "readonly", "default",
                         "needs_approval", "active", "renamed_from"})


@dataclass(frozen=True)
class FieldType:
    """What the engine needs to know about a type: its storage kind and which keys it accepts."""

    name: str
    storage: str  # string | text | integer | decimal | boolean | date | datetime | code | codes | fk_entity | fk_user
    keys: frozenset[str]
    text_search: bool = False  # may appear in an entity's `search` list
    can_be_unique: bool = True


def _t(name: str, storage: str, extra: set[str] = frozenset(), **kw) -> FieldType:
    return FieldType(name, storage, COMMON_KEYS | frozenset(extra), **kw)


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

STRING_LENGTHS = {"string": 255, "phone": 32, "email": 254, "url": 2048, "autonumber": 64}
PHONE_PATTERN = r"^\+?[0-9][0-9 \-]{5,30}[0-9]$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"
DATE_PARTS = ("YYYYMMDD", "YYYYMM", "YYYY", "YY", "MM", "DD")
AUTONUMBER_TOKEN = r"\{(YYYYMMDD|YYYYMM|YYYY|YY|MM|DD|seq:(\d{1,2}))\}"
