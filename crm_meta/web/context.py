"""Per-app access to the current build (models, registry) and per-request services."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g, has_request_context, request

from crm_meta.db.tables import ModelSet
from crm_meta.services.dictionaries import Dictionaries
from crm_meta.services.records import Actor, RecordService
from crm_meta.web.i18n import current_lang
from crm_meta.web.principals import AuthCache, TokenCache, Who, reading


@dataclass
class Build:
    """What one app was built from; stored in ``app.extensions['crm']``."""

    models: ModelSet
    db: Any  # the Flask-SQLAlchemy extension
    auth: AuthCache = field(default_factory=AuthCache)  # users, grants and policies per auth epoch
    tokens: TokenCache = field(default_factory=TokenCache)  # bearer tokens verified, with their claims

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
    """The dictionary items, read once per request (and kept across reads while nothing changed)."""
    if "crm_dicts" not in g:
        def load() -> Dictionaries:
            return Dictionaries.load(session(), build().models.system["dict_item"])

        # a read takes them as of its auth epoch, which every change of crm_dict_item moves (triggers,
        # crm_meta.db.auth_epoch); a write reads them afresh, its own changes included
        g.crm_dicts = build().auth.get(("dictionaries",), load) if reading() else load()
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
    user = current_app.appbuilder.sm.request_user()
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
    from crm_meta.services.policy import Policy, Principal

    models = build().models
    member = models.system["member"]
    sm = current_app.appbuilder.sm
    user = sm.request_user()
    if user is None or not getattr(user, "is_active", False):
        return build().auth.get(("policy", None), lambda: Policy(models.registry, Principal(None),
                                                                 _departments(None)[0], member))
    roles = user.role_names if isinstance(user, Who) else frozenset(r.name for r in sm.get_user_roles(user))
    uid = int(user.id)

    def compile_() -> Policy:
        tree, department = _departments(uid)
        principal = Principal(uid, roles, department, current_app.config["AUTH_ROLE_ADMIN"] in roles)
        return Policy(models.registry, principal, tree, member)

    # kept while the auth epoch holds (crm_meta.web.principals): roles, department and tree unchanged
    return build().auth.get(("policy", uid, roles), compile_)


def _departments(user_id: int | None) -> tuple[dict, str | None]:
    """The department tree (code → parent code) and the department of ``user_id``, in one statement."""
    from sqlalchemy import select

    from crm_meta.metadata.model import DEPARTMENT_DICTIONARY

    models = build().models
    member = models.system["member"]
    items = models.system["dict_item"]
    mine = select(member.c.department).where(member.c.user_id == user_id).scalar_subquery() \
        if user_id is not None else None
    tree, department = {}, None
    if models.registry.has_dictionary(DEPARTMENT_DICTIONARY):
        stmt = select(items.c.code, items.c.attrs, *([mine] if mine is not None else [])) \
            .where(items.c.dictionary == DEPARTMENT_DICTIONARY)
        for row in session().execute(stmt):
            tree[row[0]] = (row[1] or {}).get("parent")
            department = row[2] if mine is not None else None
    elif mine is not None:
        department = session().execute(select(mine)).scalar()
    return tree, department
