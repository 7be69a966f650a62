"""FAB's SQLAInterface with the engine's rules: the access policy's row scope on every query,
capped counts and a quick text search that never probes masked values."""
from __future__ import annotations

from typing import Any

from flask_appbuilder.models.sqla.interface import SQLAInterface
from sqlalchemy import literal_column, or_

from crm_meta.services import counting
from crm_meta.services.records import COUNT_CAP
from crm_meta.web import context


# Counting a constant lets the database answer from an index alone (an index on owner_id holds no
# `id`: counting ids made PostgreSQL visit ~9,000 heap pages for a rep's 10,000 rows, bench/policy.py).
ONE = literal_column("1")


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class EntityInterface(SQLAInterface):
    """Lists count at most COUNT_CAP rows (an uncapped COUNT on a large table takes seconds)."""

    def __init__(self, obj: type, session: Any = None, search_columns: tuple[str, ...] = (),
                 entity: str = "", search_fields: tuple[str, ...] = ()):
        super().__init__(obj, session)
        for key, column in list(self.list_columns.items()):  # a field computed when read (SLA breach):
            stored = obj.__table__.c.get(key)  # FAB's form/type introspection reads its stored column
            if stored is not None and column is not stored:
                self.list_columns[key] = stored
        self.text_columns = search_columns
        self.entity_name = entity
        self.search_fields = search_fields

    def scoped(self, query):
        """``query`` limited to the rows this request's user may read."""
        return context.policy().scope(self.entity_name, query, self.obj)

    def get_related_interface(self, col_name: str):
        """Filter dropdowns of related rows (e.g. the owner filter) list only what the user may see."""
        return RelatedInterface(self.get_related_model(col_name), owner_entity=self.entity_name)

    def text_search(self, query, term: str | None):
        """Rows whose search fields contain ``term``; a field the user sees masked only matches
        the whole value (finding a record by the phone number you know is fine, probing is not)."""
        term = (term or "").strip()[:100]
        if not term or not self.text_columns:
            return query
        policy = context.policy()
        access = policy.access(self.entity_name)
        clauses = []
        for name, column in zip(self.search_fields, self.text_columns):
            col = getattr(self.obj, column)
            if name in access.hidden:
                continue
            if name in access.masked and not access.can("reveal"):
                clauses.append(col == term)
            else:
                clauses.append(col.ilike(_like(term), escape="\\"))
        return query.filter(or_(*clauses)) if clauses else query.filter(self.obj.id.is_(None))

    def query(self, filters=None, order_column="", order_direction="", page=None, page_size=None,
              select_columns=None, outer_default_load=False, search: str | None = None):
        unscoped = self.text_search(self.session.query(self.obj), search)
        query = self.scoped(unscoped)
        ones = self.text_search(self.session.query(ONE).select_from(self.obj), search)
        parts = context.policy().count_parts(self.entity_name, self.obj) if self.entity_name else None
        if parts:  # disjoint parts of the row scope, each counted up to the cap, in one statement
            counted = self.apply_filters(ones, filters).order_by(None)
            selects = [counted.filter(p) for p in parts]
        else:
            selects = [self.apply_filters(self.scoped(ones), filters).order_by(None)]
        # An `own` scope is about one person's records: counted exactly, no planner round trip first.
        wide = bool(parts) or context.policy().access(self.entity_name).scope in ("all", None) \
            if self.entity_name else True
        if wide and counting.above_cap(self.session, self.obj.__table__.name, selects, COUNT_CAP):
            count = COUNT_CAP  # the planner is sure: "10,000+" without walking 10,001 rows
        else:
            count = counting.capped_count(self.session, selects, COUNT_CAP)
        query = self.apply_all(query, filters, order_column, order_direction, page, page_size,
                               select_columns, outer_default_load)
        return count, query.all()

    def get(self, id, filters=None, select_columns=None, outer_default_load=False):
        """One row, only when the user may read it (else None: the caller answers 404)."""
        try:
            pk = int(id)
        except (TypeError, ValueError):
            return None
        return self.scoped(self.session.query(self.obj).filter(self.obj.id == pk)).one_or_none()


class RelatedInterface(SQLAInterface):
    """The rows a related-column filter offers: users the record could be given to, or the visible
    records of a referenced entity — never the whole table (FAB_NOTES leak 3)."""

    def __init__(self, obj: type, session: Any = None, owner_entity: str = ""):
        super().__init__(obj, session)
        self.owner_entity = owner_entity

    def query(self, filters=None, order_column="", order_direction="", page=None, page_size=None,
              select_columns=None, outer_default_load=False):
        from crm_meta.web.forms import assignable_users

        query = self.session.query(self.obj)
        models = context.build().models
        target = next((name for name, model in models.models.items() if model is self.obj), None)
        if target is not None:
            query = context.policy().scope(target, query, self.obj)
        elif hasattr(self.obj, "username"):
            clause = assignable_users(self.owner_entity, self.obj)
            if clause is not None:
                query = query.filter(clause)
        else:
            query = query.filter(self.obj.id.is_(None))  # nothing else is offered
        query = self.apply_all(query, filters, order_column, order_direction, page, page_size or 200)
        rows = query.all()
        return len(rows), rows


def entity_interface(entity, models) -> EntityInterface:
    """The datamodel of one entity, searching its declared search fields (screens, API, lookups)."""
    return EntityInterface(models.model(entity.name),
                           search_columns=tuple(entity.field(n).column for n in entity.search_fields),
                           entity=entity.name, search_fields=tuple(entity.search_fields))
