"""Per-app access to the current build (models, registry) and per-request services."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app, g

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


def actor() -> Actor:
    """The user of this request, whether signed in by session cookie or by JWT bearer token."""
    user = current_app.appbuilder.sm.current_user
    return Actor(getattr(user, "id", None), current_lang())


def records(entity: str) -> RecordService:
    return RecordService(session(), build().models, entity, actor(), dictionaries())
