"""Built-in plugin: assignment rules on create, and an audited ``reassign`` event on owner changes.

The rules themselves (the ``assignment_rule`` dictionary, schemas/assignment.yaml) and how an owner is
picked are in crm_meta/services/assignment.py. This module decides *when* they apply.

When a rule applies (``crm_before_create``)
-------------------------------------------
A form always carries an owner (it is pre-filled with the current user) and the records service
fills ``default: current_user`` in before the hook runs, so "the owner was not chosen" cannot be
told from the values. The rule used instead:

1. the record is created by a person signed in to the CRM — a screen, the REST API or an import (the
   actor carries a username), and
2. its owner is that person (left at the default, or chosen as "me"), and
3. the first matching rule's department is not the person's own department (nor one below it).

So intake staff, service agents, admins and a rep entering a lead of another region hand the record
to the team the rules name, while a member of that team keeps what they enter; choosing somebody
else as the owner is always respected. Code that writes through ``RecordService`` with an
``Actor(user_id)`` it builds itself (demo data, scripts, tests) places owners deliberately and is left
alone. Two switches for such code: ``with applying():`` routes every create in the block by the rules
(the owner passed in is the fallback when no rule matches — e.g. an import run by the system), and
``with suspended():`` turns the rules off (bulk loads).

The chosen owner may be outside the acting user's own scope: rules act with the system's rights (the
records service checks ``may_assign`` on the values the user sent, before the hooks; a before-hook's
values are checked for existence and editability only), and it stamps the new owner's department on
the record after the hook. The record then leaves the creator's list when their scope does not cover
the new owner.

Audit
-----
* ``assign`` — a rule gave a new record its owner: old value the owner it came with, new value the
  owner picked, detail ``{rule, strategy, department}``;
* ``reassign`` — an update changed the owner (or the assignee): old → new as "name (username)",
  detail ``{field, from_id, to_id}``; shown in the record's History next to the field-level row.

Disable the whole behaviour with ``CRM_DISABLED_PLUGINS=crm_meta.assignment``.
"""
from __future__ import annotations

import logging
import weakref
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

from sqlalchemy import select

from crm_meta.plugins import hookimpl
from crm_meta.services import assignment as rules
from crm_meta.services import audit
from crm_meta.services.members import department_of, department_tree
from crm_meta.services.policy import subtree

log = logging.getLogger("crm_meta.assignment")

_MODE: ContextVar[bool | None] = ContextVar("crm_assignment_mode", default=None)
_MODELS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()  # engine → ModelSet
PENDING_KEY = "crm_assignment_pending"  # session.info: entity → (rule, old owner, new owner)


@contextmanager
def applying() -> Iterator[None]:
    """Route every create in the block by the rules, whoever acts and whatever owner is given."""
    token = _MODE.set(True)
    try:
        yield
    finally:
        _MODE.reset(token)


@contextmanager
def suspended() -> Iterator[None]:
    """No assignment rules for the creates in the block (bulk loads that place owners themselves)."""
    token = _MODE.set(False)
    try:
        yield
    finally:
        _MODE.reset(token)


def _models(session: Any) -> Any:
    """The ModelSet of the app the session belongs to (its engine, else the current Flask app)."""
    try:
        bind = session.get_bind()
    except Exception:  # noqa: BLE001 - an unbound session: try the app
        bind = None
    found = _MODELS.get(bind) if bind is not None else None
    if found is not None:
        return found
    try:
        from flask import current_app, has_app_context
    except ImportError:  # pragma: no cover - flask is a dependency
        return None
    if has_app_context():
        build = current_app.extensions.get("crm")
        return getattr(build, "models", None)
    return None


def _by_person(data: dict, actor: Any, owner_field: str) -> bool:
    """Rule 1 and 2: a signed-in person creates a record they own themselves."""
    return (actor is not None and actor.user_id is not None and bool(getattr(actor, "username", None))
            and data.get(owner_field) == actor.user_id)


def _outsider(session: Any, models: Any, rule: rules.Rule, actor: Any) -> bool:
    """Rule 3: the person is not in the rule's department (nor below it)."""
    mine = department_of(session, models.system["member"], actor.user_id)
    if mine is None:
        return True
    return mine not in subtree(rule.department, department_tree(session, models.system["dict_item"]))


@hookimpl(trylast=True)
def crm_before_create(entity, data, actor, session):
    """Give the new record the owner the first matching rule picks (see the module docstring)."""
    pending = session.info.setdefault(PENDING_KEY, {})
    pending.pop(entity, None)
    mode = _MODE.get()
    if mode is False:
        return
    models = _models(session)
    if models is None or entity not in models.models:
        return
    ent = models.registry.entity(entity)
    if not ent.owned or (mode is None and not _by_person(data, actor, ent.owner_field)):
        return
    found = rules.first_match(rules.load_rules(session, models.system["dict_item"], models.registry, entity), data)
    if found is None or (mode is None and not _outsider(session, models, found, actor)):
        return
    chosen = rules.choose(session, models, ent, found, rules.user_model_of(models, entity))
    if chosen is None:
        return
    old = data.get(ent.owner_field)
    data[ent.owner_field] = chosen
    pending[entity] = (found, old, chosen)


def _labels(session: Any, models: Any, entity: str, *ids: Any) -> dict[Any, str]:
    user = rules.user_model_of(models, entity)
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {u.id: rules.user_label(u) for u in session.execute(select(user).where(user.id.in_(wanted))).scalars()}


@hookimpl
def crm_after_create(entity, record, actor, session):
    """Audit the rule's choice (``assign``) once the record has its id."""
    found = session.info.get(PENDING_KEY, {}).pop(entity, None)
    if found is None:
        return
    rule, old, new = found
    models = _models(session)
    ent = record.__entity__
    if getattr(record, ent.field(ent.owner_field).column) != new:
        return  # another hook changed it again; the create row tells the owner
    names = _labels(session, models, entity, old, new)
    audit.log_event(session, models.system, actor, "assign", entity=entity, record_id=record.id,
                    field=ent.owner_field, old_value=names.get(old, old), new_value=names.get(new, new),
                    detail={"rule": rule.code, "strategy": rule.strategy, "department": rule.department})


@hookimpl
def crm_after_update(entity, record, changes, actor, session):
    """A changed owner (or assignee) is a ``reassign`` event with both users' names."""
    ent = record.__entity__
    for name in (ent.owner_field, ent.assignee_field):
        if not name or name not in changes:
            continue
        old, new = changes[name]
        models = _models(session)
        if models is None:
            return
        names = _labels(session, models, entity, old, new)
        audit.log_event(session, models.system, actor, "reassign", entity=entity, record_id=record.id,
                        field=name, old_value=names.get(old, old), new_value=names.get(new, new),
                        detail={"field": name, "from_id": old, "to_id": new})


@hookimpl
def crm_register_views(appbuilder, build):
    """Remember this app's tables for the record hooks, and report rules that cannot work."""
    try:
        _MODELS[build.db.engine] = build.models
    except TypeError:  # pragma: no cover - an engine that cannot be weakly referenced
        pass
    for problem in rules.check_rules(build.registry):
        log.warning("%s (the rule is skipped)", problem)
