"""Per-app access to the current build (models, registry) and per-request services."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, has_request_context, request

from crm_meta.db.tables import ModelSet
from crm_meta.services.dictionaries import Dictionaries
from crm_meta.services.records import Actor, RecordService
from crm_meta.web.i18n import current_lang


@dataclass
class Build:
    """What one app was built from; stored in ``app.extensions['crm']``."""

    models: ModelSet
    db: Any  # the Flask-SQLAlchemy extension

    @property
    def registry(self):
        return self.models.registry

    @property
    def plugins(self):
        """The app's ``crm_meta.plugins.Plugins``."""
        return self.models.plugins


def build() -> Build:
    return current_app.extensions["crm"]


def session():
    return build().db.session


def dictionaries() -> Dictionaries:
    """The dictionary items, read once per request."""
    if "crm_dicts" not in g:
        g.crm_dicts = Dictionaries.load(session(), build().models.system["dict_item"])
    return g.crm_dicts


REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def request_id() -> str | None:
    """This request's id: the caller's ``X-Request-Id`` when it is a sane token, else a fresh one
    (kept on ``flask.g``; sent back as the ``X-Request-Id`` response header, recorded in the audit)."""
    if not has_request_context():
        return None
    rid = g.get("crm_request_id")
    if rid is None:
        incoming = request.headers.get("X-Request-Id", "")
        rid = g.crm_request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    return rid


def actor() -> Actor:
    """The user of this request, whether signed in by session cookie or by JWT bearer token."""
    user = current_app.appbuilder.sm.current_user
    return Actor(getattr(user, "id", None), current_lang(), getattr(user, "username", None),
                 request.remote_addr if has_request_context() else None, request_id())


def records(entity: str) -> RecordService:
    """The records service of ``entity`` acting as this request's user, under their access policy."""
    return RecordService(session(), build().models, entity, actor(), dictionaries(), policy=policy())


def policy():
    """The access policy of this request's user, compiled once per request (``flask.g``)."""
    if "crm_policy" not in g:
        g.crm_policy = _compile_policy()
    return g.crm_policy


def _compile_policy():
    from sqlalchemy import select

    from crm_meta.metadata.model import DEPARTMENT_DICTIONARY
    from crm_meta.services.policy import Policy, Principal

    models = build().models
    member = models.system["member"]
    items = models.system["dict_item"]
    user = current_app.appbuilder.sm.current_user
    signed_in = user is not None and getattr(user, "is_active", False)
    # one statement: the department tree (codes and parents) and the user's own department
    mine = (select(member.c.department).where(member.c.user_id == user.id).scalar_subquery()
            if signed_in else None)
    tree, department = {}, None
    if models.registry.has_dictionary(DEPARTMENT_DICTIONARY):
        stmt = select(items.c.code, items.c.attrs, *([mine] if signed_in else [])) \
            .where(items.c.dictionary == DEPARTMENT_DICTIONARY)
        for row in session().execute(stmt):
            tree[row[0]] = (row[1] or {}).get("parent")
            department = row[2] if signed_in else None
    elif signed_in:
        department = session().execute(select(mine)).scalar()
    if not signed_in:
        return Policy(models.registry, Principal(None), tree, member)
    roles = frozenset(r.name for r in current_app.appbuilder.sm.get_user_roles(user))
    principal = Principal(user.id, roles, department, current_app.config["AUTH_ROLE_ADMIN"] in roles)
    return Policy(models.registry, principal, tree, member)
