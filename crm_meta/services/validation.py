"""Turn submitted values into typed values and check every declared constraint; shared by UI and API."""
from __future__ import annotations

import logging
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from crm_meta.metadata.fieldtypes import EMAIL_PATTERN, PHONE_PATTERN, URL_PATTERN
from crm_meta.metadata.model import Field, Label
from crm_meta.services.dictionaries import Dictionaries

MESSAGES = {
    "required": Label("必填", "is required"),
    "text": Label("必须是文本", "must be text"),
    "too_long": Label("长度不能超过 {n} 个字符", "must be at most {n} characters"),
    "too_short": Label("长度不能少于 {n} 个字符", "must be at least {n} characters"),
    "pattern": Label("格式不正确", "has the wrong format"),
    "phone": Label("不是有效的电话号码", "is not a valid phone number"),
    "email": Label("不是有效的邮箱地址", "is not a valid email address"),
    "url": Label("不是有效的网址（http:// 或 https://）", "is not a valid http(s) URL"),
    "integer": Label("必须是整数", "must be a whole number"),
    "number": Label("必须是数字", "must be a number"),
    "digits": Label("数字位数过多（最多 {p} 位，小数 {s} 位）", "has too many digits (at most {p}, {s} after the point)"),
    "min": Label("不能小于 {n}", "must be at least {n}"),
    "max": Label("不能大于 {n}", "must be at most {n}"),
    "boolean": Label("必须是 true 或 false", "must be true or false"),
    "date": Label("日期格式应为 YYYY-MM-DD", "must be a date as YYYY-MM-DD"),
    "datetime": Label("时间格式应为 YYYY-MM-DDTHH:MM:SS", "must be a date-time as YYYY-MM-DDTHH:MM:SS"),
    "code": Label("“{v}” 不是可选项", "'{v}' is not one of the choices"),
    "inactive": Label("“{v}” 已停用，不能再选用", "'{v}' is deactivated and can no longer be chosen"),
    "list": Label("必须是列表", "must be a list"),
    "id": Label("必须是记录编号（整数）", "must be a record id (integer)"),
    "missing": Label("所选记录不存在", "points at a record that does not exist"),
    "readonly": Label("只读，不能修改", "is read-only"),
    "unknown": Label("未知字段", "is not a field of this entity"),
    "unique": Label("已存在相同的值", "must be unique; another record has this value"),
    "type": Label("{zh}", "{en}"),  # a plugin field type's own message
    "type_failed": Label("字段类型 {t}（插件 {p}）的检查出错：{e}", "the check of field type {t} (plugin {p}) failed: {e}"),
}
log = logging.getLogger("crm_meta.plugins")


def message(key: str, lang: str, **kw: Any) -> str:
    return MESSAGES[key].get(lang).format(**kw)


class Invalid(Exception):
    def __init__(self, key: str, **kw: Any):
        self.key, self.kw = key, kw


def _text(field: Field, value: Any) -> str | None:
    if not isinstance(value, str):
        raise Invalid("text")
    value = value.strip()
    if value == "":
        return None
    if field.max_length and len(value) > field.max_length:
        raise Invalid("too_long", n=field.max_length)
    if field.min_length and len(value) < field.min_length:
        raise Invalid("too_short", n=field.min_length)
    builtin = {"phone": ("phone", PHONE_PATTERN), "email": ("email", EMAIL_PATTERN), "url": ("url", URL_PATTERN)}
    if field.base in builtin and not field.pattern:
        key, pattern = builtin[field.base]
        if not re.fullmatch(pattern, value):
            raise Invalid(key)
    if field.pattern and not re.fullmatch(field.pattern, value):
        raise Invalid("pattern")
    return value


def _range(field: Field, value: Any) -> Any:
    if field.min is not None and value < field.min:
        raise Invalid("min", n=field.min)
    if field.max is not None and value > field.max:
        raise Invalid("max", n=field.max)
    return value


def _integer(field: Field, value: Any) -> int:
    if isinstance(value, bool):
        raise Invalid("integer")
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"[-+]?\d{1,18}", value):
            raise Invalid("integer")
        value = int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise Invalid("integer")
        value = int(value)
    if not isinstance(value, int) or abs(value) > 2**31 - 1:
        raise Invalid("integer")
    return _range(field, value)


def _decimal(field: Field, value: Any) -> Decimal:
    if isinstance(value, bool):
        raise Invalid("number")
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise Invalid("number") from None
    if not number.is_finite():
        raise Invalid("number")
    precision, scale = field.precision or 18, field.scale if field.scale is not None else 2
    quantized = number.quantize(Decimal(1).scaleb(-scale)) if number.as_tuple().exponent < -scale else number
    if quantized != number:
        raise Invalid("digits", p=precision, s=scale)
    digits = len(quantized.as_tuple().digits)
    exponent = quantized.as_tuple().exponent
    if digits - max(0, -exponent) + scale > precision and quantized != 0:
        raise Invalid("digits", p=precision, s=scale)
    return _range(field, number)


def _boolean(field: Field, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "y", "n", "yes", "no", "on"):
        return value.lower() in ("true", "1", "y", "yes", "on")
    raise Invalid("boolean")


def _date(field: Field, value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise Invalid("date")


def _datetime(field: Field, value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else \
            value.astimezone(tz=None).replace(tzinfo=None)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise Invalid("datetime") from None
        if parsed.tzinfo is not None:
            from datetime import timezone
            parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
        return parsed
    raise Invalid("datetime")


def _id(field: Field, value: Any) -> int:
    if isinstance(value, bool):
        raise Invalid("id")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value <= 0 or value > 2**31 - 1:
        raise Invalid("id")
    return value


CONVERTERS: dict[str, Callable[[Field, Any], Any]] = {
    "string": _text, "text": _text, "integer": _integer, "decimal": _decimal, "boolean": _boolean,
    "date": _date, "datetime": _datetime, "fk_entity": _id, "fk_user": _id,
}


def convert(field: Field, value: Any, dictionaries: Dictionaries, old: Any = None) -> Any:
    """The typed value of ``field`` for ``value`` (None when empty); raises Invalid.

    A field of a plugin type (crm_field_types): the submitted text is normalised, converted and checked
    as its base type, then matched against the type's pattern and passed to its check.
    """
    custom = field.custom
    if custom is None:
        return _convert(field, value, dictionaries, old)
    try:
        if custom.normalize is not None and isinstance(value, str) and value.strip():
            value = custom.normalize(value.strip())
        result = _convert(field, value, dictionaries, old)
        refused = custom.refusal(result) if result is not None else None
    except Invalid:
        raise
    except ValueError:
        raise Invalid("type", **custom.messages()) from None
    except Exception as exc:  # noqa: BLE001 - the plugin's code: the user sees which plugin, the log the traceback
        log.exception("plugin %s: field type %s failed on field %s", custom.plugin, custom.name, field.name)
        raise Invalid("type_failed", t=custom.name, p=custom.plugin or "?",
                      e=f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    if refused:
        raise Invalid("type", **refused)
    return result


def _convert(field: Field, value: Any, dictionaries: Dictionaries, old: Any = None) -> Any:
    if value is None or (isinstance(value, str) and value.strip() == "" and field.storage != "text"):
        return [] if field.is_multi else None
    if field.storage == "code":
        if not isinstance(value, str):
            raise Invalid("text")
        _check_code(field, value, dictionaries, old=[old] if old else [])
        return value
    if field.storage == "codes":
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise Invalid("list")
        unique = list(dict.fromkeys(value))
        for code in unique:
            _check_code(field, code, dictionaries, old=list(old or []))
        return unique
    if field.storage == "text":
        if not isinstance(value, str):
            raise Invalid("text")
        return _text(field, value) if value.strip() else None
    return CONVERTERS[field.storage](field, value)


def _check_code(field: Field, code: str, dictionaries: Dictionaries, old: list) -> None:
    item = dictionaries.get(field.dictionary, code)
    ok = item is not None and (item.active or code in old) and (not field.group or item.group == field.group)
    if not ok:
        in_group = item is not None and (not field.group or item.group == field.group)
        raise Invalid("inactive" if in_group else "code", v=code[:64])  # in_group: refused as deactivated
