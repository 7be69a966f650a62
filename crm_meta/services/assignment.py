"""Assignment rules: a new record is given an owner by declared rules (分配规则), not by code.

Rules are the items of the ``assignment_rule`` dictionary (schemas/assignment.yaml), read from
``crm_dict_item`` at each create (one small query), so an admin changes them like any dictionary
item — in the YAML (synced at start-up) or in the table — without code or a migration. Items are
tried in their ``order``; the first rule that matches the record decides. Each item's ``attrs``:

``entity``          the entity the rule is for (required), e.g. ``customer``;
``department``      a code of the ``department`` dictionary (required): the record goes to one of
                    its members (``crm_member``);
``strategy``        ``round_robin`` (default) — the members in turn, by user id — or
                    ``least_loaded`` — the member owning the fewest open records of the entity;
``field`` + ``value``  a condition: the record's ``field`` has ``value``; ``value`` may list several
                    codes separated by commas (``"north,northeast"``);
``<field name>``    any other key naming a field of the entity is a condition too
                    (``{region: east, industry: finance}``: both must hold); for multi-valued fields
                    (tags) one of the record's codes must be listed. A rule without conditions
                    matches every record of its entity;
``tree``            ``true``: members of the departments below ``department`` are in the pool too;
``include_managers`` ``true``: department managers take records like everyone else. By default
                    they are skipped unless the department has no other member;
``closed_field`` / ``closed_values``  for ``least_loaded``: records whose ``closed_field`` holds one
                    of ``closed_values`` (comma list) do not count as open; without
                    ``closed_values``, a record counts as closed once ``closed_field`` has any value
                    (e.g. a ticket with a ``result``).

Only active users are given records. When the matching rule's department has no such member, the
record keeps the owner it came with.

Concurrency: the round-robin cursor of each rule is a row of ``crm_sequence`` (``name`` =
``assignment_rule:<code>``) advanced with the same atomic ``INSERT … ON CONFLICT DO UPDATE …
RETURNING`` as auto-numbers (crm_meta/services/numbering.py), so several gunicorn workers never hand
out the same turn twice; on PostgreSQL the step is committed at once, so a create that fails later
skips a turn rather than repeating one. ``least_loaded`` counts the open records of every pool member
in one GROUP BY query.

When rules apply (the owner field of a create, and who is acting) is decided by the built-in plugin
crm_meta/assignment.py; this module is framework-free (SQLAlchemy and the metadata only).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from sqlalchemy import Table, and_, func, not_, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from crm_meta.metadata.model import DEPARTMENT_DICTIONARY, Entity, Label, Registry
from crm_meta.services.members import department_tree
from crm_meta.services.policy import subtree

log = logging.getLogger("crm_meta.assignment")

DICTIONARY = "assignment_rule"
STRATEGIES = ("round_robin", "least_loaded")
SEQUENCE_PREFIX = "assignment_rule:"
RESERVED = frozenset({"entity", "department", "strategy", "field", "value", "tree", "include_managers",
                      "closed_field", "closed_values", "note"})


@dataclass(frozen=True)
class Rule:
    code: str
    label: Label
    entity: str
    department: str
    strategy: str = "round_robin"
    conditions: Mapping[str, frozenset[str]] = field(default_factory=dict)  # field → accepted values
    tree: bool = False
    include_managers: bool = False
    closed_field: str | None = None
    closed_values: frozenset[str] = frozenset()

    def describe(self, lang: str = "zh") -> str:
        en = lang.startswith("en")
        cond = ", ".join(f"{k} ∈ {{{', '.join(sorted(v))}}}" for k, v in self.conditions.items()) \
            or ("every record" if en else "全部记录")
        return f"{self.entity}: {cond} → {self.department} ({self.strategy})"


@dataclass(frozen=True)
class Assignment:
    """What a rule decided for one record."""

    rule: Rule
    user_id: int


# -- values -------------------------------------------------------------------------------------------

def _texts(value: Any) -> frozenset[str]:
    """A value as the set of texts a condition compares with (codes; 'true'/'false'; ids as text)."""
    if value is None:
        return frozenset()
    if isinstance(value, bool):
        return frozenset({"true" if value else "false"})
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(t for v in value for t in _texts(v))
    if isinstance(value, str):
        return frozenset(p.strip() for p in value.split(",") if p.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return frozenset({str(value)})


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "y", "on")
    return bool(value)


def _record_texts(value: Any) -> frozenset[str]:
    """A record's value (already converted by the records service) as texts; strings are not split."""
    if isinstance(value, str):
        return frozenset({value})
    if hasattr(value, "id") and not isinstance(value, (int, float, bool)):
        return frozenset({str(value.id)})
    return _texts(value)


# -- reading rules ------------------------------------------------------------------------------------

def rule_from_item(code: str, label: Label, attrs: Mapping[str, Any], registry: Registry | None = None) -> Rule:
    """A rule from a dictionary item's ``attrs``; ValueError naming what is wrong.

    With ``registry`` the entity, fields, department and codes are checked against the dictionary.
    """
    attrs = dict(attrs or {})
    entity_name = str(attrs.get("entity") or "").strip()
    if not entity_name:
        raise ValueError("attrs.entity is missing")
    department = str(attrs.get("department") or "").strip()
    if not department:
        raise ValueError("attrs.department is missing")
    strategy = str(attrs.get("strategy") or "round_robin").strip()
    if strategy not in STRATEGIES:
        raise ValueError(f"attrs.strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    conditions: dict[str, frozenset[str]] = {}
    if attrs.get("field") not in (None, ""):
        if attrs.get("value") in (None, ""):
            raise ValueError("attrs.field is given without attrs.value")
        conditions[str(attrs["field"]).strip()] = _texts(attrs["value"])
    elif attrs.get("value") not in (None, ""):
        raise ValueError("attrs.value is given without attrs.field")
    extra = {k: v for k, v in attrs.items() if k not in RESERVED}
    for key, value in extra.items():
        if value in (None, ""):
            raise ValueError(f"attrs.{key} has no value")
        conditions[key] = conditions.get(key, frozenset()) | _texts(value)
    closed_field = str(attrs.get("closed_field") or "").strip() or None
    closed_values = _texts(attrs.get("closed_values")) if attrs.get("closed_values") not in (None, "") else frozenset()
    if closed_values and closed_field is None:
        raise ValueError("attrs.closed_values is given without attrs.closed_field")
    rule = Rule(code, label, entity_name, department, strategy, conditions, _flag(attrs.get("tree")),
                _flag(attrs.get("include_managers")), closed_field, closed_values)
    if registry is not None:
        _check(rule, registry, extra)
    return rule


def _check(rule: Rule, registry: Registry, extra: Mapping[str, Any]) -> None:
    try:
        entity = registry.entity(rule.entity)
    except KeyError:
        raise ValueError(f"attrs.entity: unknown entity {rule.entity!r}") from None
    if not entity.owned:
        raise ValueError(f"attrs.entity: {rule.entity!r} has no owner field to assign")
    if not registry.has_dictionary(DEPARTMENT_DICTIONARY) or \
            registry.dictionary(DEPARTMENT_DICTIONARY).item(rule.department) is None:
        raise ValueError(f"attrs.department: unknown department {rule.department!r}")
    for name, values in rule.conditions.items():
        if not entity.has_field(name):
            where = "attrs.field" if name not in extra else f"attrs.{name}"
            raise ValueError(f"{where}: {rule.entity} has no field {name!r}")
        f = entity.field(name)
        if f.dictionary and registry.has_dictionary(f.dictionary):
            known = {i.code for i in registry.dictionary(f.dictionary).items}
            unknown = sorted(values - known)
            if unknown:
                raise ValueError(f"{name}: {', '.join(unknown)} not in dictionary {f.dictionary!r}")
    if rule.closed_field is not None:
        if not entity.has_field(rule.closed_field) or entity.field(rule.closed_field).is_multi:
            raise ValueError(f"attrs.closed_field: {rule.entity} has no single-valued field {rule.closed_field!r}")


def check_rules(registry: Registry) -> list[str]:
    """Problems of the declared (YAML) rules, one line each: ``assignment_rule <code>: message``."""
    if not registry.has_dictionary(DICTIONARY):
        return []
    problems = []
    for item in registry.dictionary(DICTIONARY).items:
        if not item.active:
            continue
        try:
            rule_from_item(item.code, item.label, item.attrs, registry)
        except (TypeError, ValueError) as exc:
            problems.append(f"{DICTIONARY} {item.code}: {exc}")
    return problems


def load_rules(session: Session | Connection, dict_item: Table, registry: Registry,
               entity: str | None = None) -> list[Rule]:
    """The active rules in order (of ``entity`` only, when given); broken items are skipped with a warning."""
    rows = session.execute(select(dict_item).where(dict_item.c.dictionary == DICTIONARY,
                                                   dict_item.c.active.is_(True))
                           .order_by(dict_item.c.sort_order, dict_item.c.code)).mappings()
    rules = []
    for r in rows:
        attrs = dict(r["attrs"] or {})
        if entity is not None and str(attrs.get("entity") or "").strip() != entity:
            continue
        try:
            rules.append(rule_from_item(r["code"], Label(r["label_zh"], r["label_en"]), attrs, registry))
        except (TypeError, ValueError) as exc:
            log.warning("assignment rule %s ignored: %s", r["code"], exc)
    return rules


# -- matching -----------------------------------------------------------------------------------------

def matches(rule: Rule, values: Mapping[str, Any]) -> bool:
    """Every condition of ``rule`` holds for the record's ``values`` (field name → value)."""
    for name, accepted in rule.conditions.items():
        if not (_record_texts(values.get(name)) & accepted):
            return False
    return True


def first_match(rules: Iterable[Rule], values: Mapping[str, Any]) -> Rule | None:
    return next((r for r in rules if matches(r, values)), None)


def departments_of(rule: Rule, tree: Mapping[str, str | None]) -> list[str]:
    """The rule's department, and the ones below it when ``tree`` is set."""
    return sorted(subtree(rule.department, tree)) if rule.tree else [rule.department]


# -- the pool and the pick ----------------------------------------------------------------------------

def pool(session: Session, models: Any, rule: Rule, user_model: Any) -> list[int]:
    """The user ids a record of ``rule`` may go to, ascending: active members of its department(s);
    managers only when ``include_managers`` or when nobody else is there."""
    member = models.system["member"]
    departments = departments_of(rule, department_tree(session, models.system["dict_item"]) if rule.tree else {})
    rows = session.execute(
        select(member.c.user_id, member.c.is_manager)
        .join(user_model.__table__, user_model.__table__.c.id == member.c.user_id)
        .where(member.c.department.in_(departments), user_model.__table__.c.active.is_(True))
        .order_by(member.c.user_id)).all()
    everyone = [r.user_id for r in rows]
    if rule.include_managers:
        return everyone
    staff = [r.user_id for r in rows if not r.is_manager]
    return staff or everyone


def round_robin(session: Session, models: Any, rule: Rule, members: list[int]) -> int:
    """The next member in turn; the cursor is the rule's row in ``crm_sequence`` (atomic upsert)."""
    from crm_meta.services.numbering import next_value

    turn = next_value(session, models.system["sequence"], f"{SEQUENCE_PREFIX}{rule.code}"[:80], "turn")
    return members[(turn - 1) % len(members)]


def loads(session: Session, models: Any, entity: Entity, rule: Rule, members: list[int]) -> dict[int, int]:
    """Open records of ``entity`` owned by each member: one GROUP BY query (members without any: 0)."""
    model = models.model(entity.name)
    member = models.system["member"]
    owner = getattr(model, entity.field(entity.owner_field).column)
    on = [owner == member.c.user_id]
    if rule.closed_field:
        f = entity.field(rule.closed_field)
        col = getattr(model, f.column)
        if rule.closed_values:
            on.append(or_(col.is_(None), not_(col.in_(sorted(rule.closed_values)))))
        elif f.storage in ("string", "text"):
            on.append(or_(col.is_(None), col == ""))
        else:
            on.append(col.is_(None))
    stmt = (select(member.c.user_id, func.count(model.id))
            .select_from(member).outerjoin(model, and_(*on))
            .where(member.c.user_id.in_(members)).group_by(member.c.user_id))
    counts = dict.fromkeys(members, 0)
    counts.update({uid: n for uid, n in session.execute(stmt)})
    return counts


def least_loaded(session: Session, models: Any, entity: Entity, rule: Rule, members: list[int]) -> int:
    """The member with the fewest open records (ties: the lowest user id)."""
    counts = loads(session, models, entity, rule, members)
    return min(members, key=lambda uid: (counts.get(uid, 0), uid))


def choose(session: Session, models: Any, entity: Entity, rule: Rule, user_model: Any) -> int | None:
    """The owner ``rule`` gives a new record, or None when its department has nobody to give it to."""
    members = pool(session, models, rule, user_model)
    if not members:
        log.warning("assignment rule %s: department %s has no active member; owner left as it is",
                    rule.code, rule.department)
        return None
    if rule.strategy == "least_loaded":
        return least_loaded(session, models, entity, rule, members)
    return round_robin(session, models, rule, members)


def route(session: Session, models: Any, entity: str, values: Mapping[str, Any],
          user_model: Any | None = None) -> Assignment | None:
    """The rule matching a new record of ``entity`` with ``values`` and the owner it picks; None when
    no rule matches or its department has nobody. Writes nothing but the round-robin cursor."""
    ent = models.registry.entity(entity)
    if not ent.owned:
        return None
    rule = first_match(load_rules(session, models.system["dict_item"], models.registry, entity), values)
    if rule is None:
        return None
    if user_model is None:
        user_model = user_model_of(models, entity)
    chosen = choose(session, models, ent, rule, user_model)
    return Assignment(rule, chosen) if chosen is not None else None


def user_model_of(models: Any, entity: str) -> Any:
    """The user class (FAB's ``User``) the entity's stamps point at."""
    return models.model(entity).__mapper__.relationships["created_by"].mapper.class_


def user_label(user: Any) -> str:
    """``王芳 (wangfang)``: the name as people read it (Chinese family name first) and the username."""
    if user is None:
        return ""
    first, last = user.first_name or "", user.last_name or ""
    if any("\u4e00" <= ch <= "\u9fff" for ch in first + last):
        name = f"{last}{first}"
    else:
        name = f"{first} {last}".strip()
    return f"{name} ({user.username})" if name and name != user.username else str(user.username)
