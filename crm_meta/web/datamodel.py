"""FAB's SQLAInterface with the engine's rules: capped counts and a quick text search."""
from __future__ import annotations

from typing import Any

from flask_appbuilder.models.sqla.interface import SQLAInterface
from sqlalchemy import func, or_, select

from crm_meta.services.records import COUNT_CAP


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class EntityInterface(SQLAInterface):
    """Lists count at most COUNT_CAP rows (an uncapped COUNT on a large table takes seconds)."""

    def __init__(self, obj: type, session: Any = None, search_columns: tuple[str, ...] = ()):
        super().__init__(obj, session)
        self.text_columns = search_columns

    def text_search(self, query, term: str | None):
        term = (term or "").strip()[:100]
        if not term or not self.text_columns:
            return query
        cols = [getattr(self.obj, c) for c in self.text_columns]
        return query.filter(or_(*[c.ilike(_like(term), escape="\\") for c in cols]))

    def query(self, filters=None, order_column="", order_direction="", page=None, page_size=None,
              select_columns=None, outer_default_load=False, search: str | None = None):
        query = self.text_search(self.session.query(self.obj), search)
        counted = self.apply_filters(query, filters).with_entities(self.obj.id).order_by(None)
        inner = counted.limit(COUNT_CAP + 1).subquery()
        count = min(self.session.execute(select(func.count()).select_from(inner)).scalar_one(), COUNT_CAP)
        query = self.apply_all(query, filters, order_column, order_direction, page, page_size,
                               select_columns, outer_default_load)
        return count, query.all()


def entity_interface(entity, models) -> EntityInterface:
    """The datamodel of one entity, searching its declared search fields (screens, API, lookups)."""
    return EntityInterface(models.model(entity.name),
                           search_columns=tuple(entity.field(n).column for n in entity.search_fields))
