"""Admin changes to dictionary items (数据字典维护): add, edit, reorder, deactivate / activate.

Items live in ``crm_dict_item`` and are read per request, so a change counts from the next request
without a migration. Every row an admin adds or changes gets ``origin = 'admin'``; the YAML sync at
start-up (``dictionaries.sync_from_registry``) refreshes only ``origin = 'yaml'`` rows, so it keeps
the admin's version. Which dictionaries exist (name, label) comes from the registry.

Every input is checked before anything is written; a refusal raises ``DictionaryRefused`` (400) or
``DictionaryNotFound`` (404) with one message per problem, keyed by field. Writers only execute
statements in the caller's transaction (one audit entry per change, action ``dictionary``): the
caller commits, or rolls back on any exception, so a refused change leaves nothing behind.

Framework-free: SQLAlchemy and the metadata only (the web layer is crm_meta/web/dictionary_admin.py).
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_meta.errors import CrmError
from crm_meta.metadata.model import DEPARTMENT_DICTIONARY, Label, Registry
from crm_meta.services import audit

ORIGIN = "admin"
AUDIT_ACTION = "dictionary"
CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as a YAML item's code
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
LABEL_MAX, INT_MAX = 200, 2**31 - 1
KEYS = ("code", "label", "order", "active", "group", "attrs")
POSITIVE_ATTRS = ("cadence_days", "response_hours", "resolve_hours")  # read by followups.py / sla.py
BOOLEAN_ATTRS = ("responded", "resolved")

MESSAGES = {
    "dictionary": Label("没有名为 “{v}” 的数据字典", "There is no dictionary named '{v}'"),
    "item": Label("数据字典 “{d}” 中没有代码为 “{v}” 的选项", "Dictionary '{d}' has no item with code '{v}'"),
    "body": Label("请求内容必须是 JSON 对象", "The body must be a JSON object"),
    "unknown_key": Label("未知的键", "is not a key of an item"),
    "required": Label("必填", "is required"),
    "code": Label("代码须以字母或数字开头，只含字母、数字、_ . -，最多 64 个字符",
                  "must start with a letter or digit, then letters, digits, _ . or -, at most 64 characters"),
    "duplicate": Label("代码 “{v}” 已存在于该字典", "code '{v}' is already used in this dictionary"),
    "immutable": Label("代码不能修改", "cannot be changed (codes are stored in records)"),
    "label": Label("中文和英文名称都必填，每个最多 200 个字符",
                   "needs a Chinese (zh) and an English (en) text, each at most 200 characters"),
    "order": Label("必须是整数", "must be a whole number"),
    "active": Label("必须是 true 或 false", "must be true or false"),
    "group": Label("分组须为小写字母开头，只含小写字母、数字和 _，最多 40 个字符",
                   "must be a lower-case letter, then lower-case letters, digits or _, at most 40 characters"),
    "attrs_json": Label("不是有效的 JSON", "is not valid JSON"),
    "attrs_mapping": Label("必须是 JSON 对象（键 → 值）", "must be a JSON object (key → value)"),
    "attrs_key": Label("属性名 “{v}” 无效（小写字母开头，只含小写字母、数字和 _）",
                       "attribute name '{v}' is invalid (a lower-case letter, then lower-case letters, digits or _)"),
    "attrs_value": Label("属性 “{v}” 的值必须是文本、数字、true/false 或 null",
                         "attribute '{v}' must be text, a number, true/false or null"),
    "attrs_positive": Label("属性 “{v}” 必须是正数", "attribute '{v}' must be a positive number"),
    "attrs_boolean": Label("属性 “{v}” 必须是 true 或 false", "attribute '{v}' must be true or false"),
    "attrs_hours": Label("response_hours 不能大于 resolve_hours", "response_hours must not exceed resolve_hours"),
    "attrs_escalate": Label("escalate 只能是 manager", "escalate must be 'manager'"),
    "attrs_parent": Label("上级部门 “{v}” 不存在或会形成循环", "parent department '{v}' does not exist or makes a loop"),
    "attrs_rule": Label("告警规则无效：{v}", "invalid alert rule: {v}"),
    "codes": Label("必须是代码列表", "must be a list of codes"),
    "codes_unknown": Label("未知代码：{v}", "unknown code(s): {v}"),
    "codes_twice": Label("代码重复：{v}", "code(s) listed twice: {v}"),
}


class DictionaryRefused(CrmError):
    """A change was refused; nothing was written. ``problems`` maps a field (or "") → messages."""

    status = 400

    def __init__(self, problems: dict[str, list[str]]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {', '.join(v)}" if k else ", ".join(v) for k, v in problems.items()))


class DictionaryNotFound(DictionaryRefused):
    status = 404


def _msg(key: str, lang: str, **kw: Any) -> str:
    return MESSAGES[key].get(lang).format(**kw)


# -- reading --------------------------------------------------------------------------------------

def item_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the API and the YAML export show an item."""
    return {"code": row["code"], "label": {"zh": row["label_zh"], "en": row["label_en"]},
            "order": row["sort_order"], "active": bool(row["active"]), "group": row["grp"],
            "attrs": dict(row["attrs"] or {})}


def _rows(session: Session | Connection, table: Table, name: str) -> list[Mapping[str, Any]]:
    return list(session.execute(select(table).where(table.c.dictionary == name)
                                .order_by(table.c.sort_order, table.c.code)).mappings())


def _dictionary(registry: Registry, name: str, lang: str):
    if not isinstance(name, str) or not registry.has_dictionary(name):
        raise DictionaryNotFound({"": [_msg("dictionary", lang, v=str(name)[:64])]})
    return registry.dictionary(name)


def overview(session: Session | Connection, table: Table, registry: Registry) -> list[dict[str, Any]]:
    """Every declared dictionary: name, label, how many items (and how many active)."""
    counts = {(d, bool(a)): n for d, a, n in session.execute(
        select(table.c.dictionary, table.c.active, func.count()).group_by(table.c.dictionary, table.c.active))}
    return [{"name": d.name, "label": {"zh": d.label.zh, "en": d.label.en},
             "items": counts.get((d.name, True), 0) + counts.get((d.name, False), 0),
             "active": counts.get((d.name, True), 0)}
            for d in sorted(registry.dictionaries, key=lambda d: d.name)]


def items(session: Session | Connection, table: Table, registry: Registry, name: str,
          lang: str = "zh") -> list[dict[str, Any]]:
    """All items of a dictionary, inactive ones included, in display order (with their origin)."""
    _dictionary(registry, name, lang)
    return [{**item_dict(r), "origin": r["origin"]} for r in _rows(session, table, name)]


def admin_items(session: Session | Connection, table: Table) -> dict[str, list[dict[str, Any]]]:
    """The overlay of admin-origin items per dictionary (what the YAML files do not say)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in session.execute(select(table).where(table.c.origin == ORIGIN)
                             .order_by(table.c.dictionary, table.c.sort_order, table.c.code)).mappings():
        out.setdefault(r["dictionary"], []).append(item_dict(r))
    return out


# -- checking -------------------------------------------------------------------------------------

def _attrs(value: Any, name: str, code: str, rows, lang: str, problems: dict) -> dict | None:
    err = lambda key, **kw: problems.setdefault("attrs", []).append(_msg(key, lang, **kw))  # noqa: E731
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return err("attrs_json")
    if not isinstance(value, Mapping):
        return err("attrs_mapping")
    for key, v in value.items():
        if not isinstance(key, str) or not IDENTIFIER.match(key):
            err("attrs_key", v=str(key)[:40])
        elif v is not None and not isinstance(v, (str, int, float, bool)):
            err("attrs_value", v=key)
        elif key in POSITIVE_ATTRS and (isinstance(v, bool) or not isinstance(v, (int, float))
                                        or not 0 < v < float("inf")):
            err("attrs_positive", v=key)
        elif key in BOOLEAN_ATTRS and not isinstance(v, bool):
            err("attrs_boolean", v=key)
    hours = [value.get(k) for k in ("response_hours", "resolve_hours")]
    if all(isinstance(h, (int, float)) and not isinstance(h, bool) for h in hours) and hours[0] > hours[1]:
        err("attrs_hours")
    if "escalate" in value and value["escalate"] not in ("manager",):
        err("attrs_escalate")
    if name == DEPARTMENT_DICTIONARY and value.get("parent") is not None:
        parents = {r["code"]: (r["attrs"] or {}).get("parent") for r in rows}
        parents[code], at, seen = value["parent"], value["parent"], {code}
        while at is not None and at not in seen and at in parents:
            seen.add(at)
            at = parents[at]
        if at is not None:  # unknown department, or back at one already seen: a loop
            err("attrs_parent", v=str(value["parent"])[:64])
    if name == "alert_rule":
        from crm_meta.services.alerts import rule_from_item

        try:
            rule_from_item(code, Label(code, code), value)
        except (ValueError, TypeError) as exc:
            err("attrs_rule", v=str(exc))
    return dict(value) if "attrs" not in problems else None


def _clean(data: Any, name: str, rows, lang: str, *, code: str | None) -> dict[str, Any]:
    """The columns to write for ``data`` (only the keys given); DictionaryRefused with every problem.

    ``code`` is the item being edited (None: a new item, whose code comes from ``data``)."""
    if not isinstance(data, Mapping):
        raise DictionaryRefused({"": [_msg("body", lang)]})
    problems: dict[str, list[str]] = {}
    err = lambda field, key, **kw: problems.setdefault(field, []).append(_msg(key, lang, **kw))  # noqa: E731
    out: dict[str, Any] = {}
    for key in data:
        if key not in KEYS:
            err(str(key)[:40], "unknown_key")
    if code is None:
        new = data.get("code")
        if new in (None, ""):
            err("code", "required")
        elif not isinstance(new, str) or not CODE.match(new):
            err("code", "code")
        elif any(r["code"] == new for r in rows):
            err("code", "duplicate", v=new)
        else:
            out["code"] = new
        if "label" not in data:
            err("label", "label")
    elif "code" in data and data["code"] != code:
        err("code", "immutable")
    if "label" in data:
        label = data["label"]
        texts = [label.get(k) for k in ("zh", "en")] if isinstance(label, Mapping) else [None, None]
        texts = [x.strip() if isinstance(x, str) else "" for x in texts]
        if not all(texts) or any(len(x) > LABEL_MAX for x in texts) or set(label) - {"zh", "en"}:
            err("label", "label")
        else:
            out["label_zh"], out["label_en"] = texts
    if "order" in data:
        order = data["order"]
        if isinstance(order, str) and re.fullmatch(r"\s*[-+]?\d{1,10}\s*", order):
            order = int(order)
        if isinstance(order, bool) or not isinstance(order, int) or abs(order) > INT_MAX:
            err("order", "order")
        else:
            out["sort_order"] = order
    if "active" in data:
        active = data["active"]
        if isinstance(active, str) and active.lower() in ("true", "false", "1", "0", "y", "n", "on", "off"):
            active = active.lower() in ("true", "1", "y", "on")
        if not isinstance(active, bool):
            err("active", "active")
        else:
            out["active"] = active
    if "group" in data:
        group = data["group"].strip() if isinstance(data["group"], str) else data["group"]
        if group in (None, ""):
            out["grp"] = None
        elif not isinstance(group, str) or not IDENTIFIER.match(group):
            err("group", "group")
        else:
            out["grp"] = group
    if "attrs" in data:
        attrs = _attrs(data["attrs"], name, code or str(data.get("code")), rows, lang, problems)
        if attrs is not None:
            out["attrs"] = attrs
    if problems:
        raise DictionaryRefused(problems)
    return out


# -- writing --------------------------------------------------------------------------------------

def _log(session, system: Mapping[str, Table], actor, name: str, row_id: int, code: str, op: str,
         field: str | None = None, old: Any = None, new: Any = None) -> None:
    audit.log_event(session, system, actor, AUDIT_ACTION, entity=f"dictionary:{name}", record_id=row_id,
                    field=field, old_value=old, new_value=new,
                    detail={"dictionary": name, "code": code, "op": op})


def add_item(session: Session | Connection, system: Mapping[str, Table], registry: Registry, actor: Any,
             name: str, data: Any, lang: str = "zh") -> dict[str, Any]:
    """Add an item (code, label {zh, en}; order — default after the last —, active, group, attrs)."""
    _dictionary(registry, name, lang)
    table = system["dict_item"]
    rows = _rows(session, table, name)
    values = _clean(data, name, rows, lang, code=None)
    values.setdefault("sort_order", max((r["sort_order"] for r in rows), default=0) + 10)
    values.setdefault("active", True)
    values.setdefault("grp", None)
    values.setdefault("attrs", {})
    try:
        row_id = session.execute(table.insert().values(dictionary=name, origin=ORIGIN, **values)) \
            .inserted_primary_key[0]
    except IntegrityError:  # added by someone else at the same moment
        raise DictionaryRefused({"code": [_msg("duplicate", lang, v=values["code"])]}) from None
    item = item_dict({**values, "id": row_id})
    _log(session, system, actor, name, row_id, values["code"], "add", new=item)
    return item


def _row(session, table: Table, name: str, code: Any, lang: str) -> Mapping[str, Any]:
    row = session.execute(select(table).where(table.c.dictionary == name, table.c.code == code)).mappings().first() \
        if isinstance(code, str) else None
    if row is None:
        raise DictionaryNotFound({"": [_msg("item", lang, d=name, v=str(code)[:64])]})
    return row


AUDIT_FIELDS = {"label_zh": "label_zh", "label_en": "label_en", "sort_order": "order", "active": "active",
                "grp": "group", "attrs": "attrs"}


def edit_item(session: Session | Connection, system: Mapping[str, Table], registry: Registry, actor: Any,
              name: str, code: str, data: Any, lang: str = "zh") -> dict[str, Any]:
    """Change an item's label, order, active flag, group or attrs (only the keys given); never its code."""
    _dictionary(registry, name, lang)
    table = system["dict_item"]
    row = _row(session, table, name, code, lang)
    values = _clean(data, name, _rows(session, table, name), lang, code=code)
    changed = {k: v for k, v in values.items() if (dict(row[k] or {}) if k == "attrs" else row[k]) != v}
    if changed:
        session.execute(table.update().where(table.c.id == row["id"]).values(origin=ORIGIN, **changed))
        op = "edit" if set(changed) != {"active"} else ("activate" if changed["active"] else "deactivate")
        for column, new in changed.items():
            _log(session, system, actor, name, row["id"], code, op, AUDIT_FIELDS[column], row[column], new)
    return item_dict({**row, **changed})


def set_active(session, system: Mapping[str, Table], registry: Registry, actor: Any, name: str, code: str,
               active: bool, lang: str = "zh") -> dict[str, Any]:
    """Deactivate (no longer offered; old records keep showing its label) or activate an item."""
    return edit_item(session, system, registry, actor, name, code, {"active": bool(active)}, lang)


def reorder(session: Session | Connection, system: Mapping[str, Table], registry: Registry, actor: Any,
            name: str, codes: Any, lang: str = "zh") -> list[dict[str, Any]]:
    """Put the listed codes first, in that order, the others after them as they were; orders become
    10, 20, 30 … Rows whose order changes become admin rows. Returns the items in the new order."""
    _dictionary(registry, name, lang)
    table = system["dict_item"]
    rows = _rows(session, table, name)
    if not isinstance(codes, (list, tuple)) or not all(isinstance(c, str) for c in codes):
        raise DictionaryRefused({"codes": [_msg("codes", lang)]})
    known = {r["code"] for r in rows}
    unknown = [c for c in codes if c not in known]
    twice = sorted({c for c in codes if codes.count(c) > 1})
    problems = {}
    if unknown:
        problems.setdefault("codes", []).append(_msg("codes_unknown", lang, v=", ".join(c[:64] for c in unknown)))
    if twice:
        problems.setdefault("codes", []).append(_msg("codes_twice", lang, v=", ".join(twice)))
    if problems:
        raise DictionaryRefused(problems)
    listed = set(codes)
    ordered = [next(r for r in rows if r["code"] == c) for c in codes] + [r for r in rows if r["code"] not in listed]
    out = []
    for i, r in enumerate(ordered):
        order = (i + 1) * 10
        if r["sort_order"] != order:
            session.execute(table.update().where(table.c.id == r["id"]).values(sort_order=order, origin=ORIGIN))
        out.append(item_dict({**r, "sort_order": order}))
    before, after = [r["code"] for r in rows], [r["code"] for r in ordered]
    if before != after or any(r["sort_order"] != (i + 1) * 10 for i, r in enumerate(ordered)):
        audit.log_event(session, system, actor, AUDIT_ACTION, entity=f"dictionary:{name}", field="order",
                        old_value=before, new_value=after, detail={"dictionary": name, "op": "reorder"})
    return out


def move(session, system: Mapping[str, Table], registry: Registry, actor: Any, name: str, code: str,
         step: int, lang: str = "zh") -> list[dict[str, Any]]:
    """Move one item up (step -1) or down (+1) in its dictionary's display order."""
    _dictionary(registry, name, lang)
    codes = [r["code"] for r in _rows(session, system["dict_item"], name)]
    if code not in codes:
        raise DictionaryNotFound({"": [_msg("item", lang, d=name, v=str(code)[:64])]})
    i = codes.index(code)
    j = max(0, min(len(codes) - 1, i + (1 if step > 0 else -1)))
    codes[i], codes[j] = codes[j], codes[i]
    return reorder(session, system, registry, actor, name, codes, lang)
