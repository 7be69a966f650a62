"""FAB's SQLAInterface with the engine's rules: the access policy's row scope on every query,
capped counts and a quick text search that never probes masked values."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flask_appbuilder.models.filters import BaseFilter, Filters
from flask_appbuilder.models.sqla.filters import (
    FilterEqual,
    FilterIn,
    FilterNotEqual,
    FilterNotIn,
    SQLAFilterConverter,
)
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.utils.base import get_column_root_relation, is_column_dotted
from sqlalchemy import func, literal_column, or_, select

from crm_meta.metadata.model import Label
from crm_meta.services import counting
from crm_meta.services.records import COUNT_CAP
from crm_meta.web import context, principals
from crm_meta.web.i18n import lazy


# Counting a constant lets the database answer from an index alone (an index on owner_id holds no
# `id`: counting ids made PostgreSQL visit ~9,000 heap pages for a rep's 10,000 rows, bench/policy.py).
ONE = literal_column("1")


@dataclass(frozen=True)
class PagePlan:
    """The statements of one list page: ``counted`` (the page's ``width`` mapped columns, then its
    capped count and the codes of ``folded`` multi-value fields), ``estimated`` (the same without
    the count, when the planner's estimate says "10,000+"), the count ``selects`` (for the planner
    and for an empty page) — or ``plain``, FAB's query as it is (selected columns: no extra column)."""

    selects: list
    wide: bool
    counted: Any = None
    estimated: Any = None
    folded: tuple = ()
    plain: Any = None
    width: int = 0


def _plan_key(model, filters, order_column, order_direction, page, page_size, search, codes):
    """What a page's statements depend on besides the user's policy; None when a filter value is
    not plain data (the plan is then built for this request only)."""
    try:
        active = () if filters is None else tuple(
            (f.column_name, type(f).__module__, type(f).__qualname__, json.dumps(v, sort_keys=True))
            for f, v in zip(filters.filters, filters.values))
    except (TypeError, ValueError):
        return None
    return (model, active, order_column or "", order_direction or "", page, page_size,
            (search or "").strip()[:100], tuple(codes))


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# How a database's codes column reads: PostgreSQL's ordered array (None: no codes), SQLite's JSON
# array put in the order of the relationship's ORDER BY code (SQLite's BINARY collation compares
# UTF-8 bytes, which is the order of Python's str comparison).
_CODES_DECODERS = {
    "postgresql": lambda value: list(value) if value else [],
    "sqlite": lambda value: sorted(json.loads(value)) if value and value != "[]" else [],
}


def _codes_of(value: Any) -> list:
    values = value if isinstance(value, (list, tuple)) else [value]
    return [str(v) for v in values if v not in (None, "")]


class FilterHasCode(BaseFilter):
    """A multi-value field (tags) holding the given code; ``has`` on REST, where a list of codes
    means every one of them (FAB applies a list value code by code)."""

    name = lazy(Label("包含", "Has"))
    arg_name = "has"

    def _records(self, value):
        link = getattr(self.model, f"{self.column_name}_links").property.mapper.local_table
        return select(link.c.record_id).where(link.c.code.in_(_codes_of(value)))

    def apply(self, query, value):
        return query.filter(self.model.id.in_(self._records(value)))


class FilterHasNotCode(FilterHasCode):
    """Not holding the given code (a list: none of them); ``nhas`` on REST."""

    name = lazy(Label("不包含", "Has not"))
    arg_name = "nhas"

    def apply(self, query, value):
        return query.filter(self.model.id.not_in(self._records(value)))


class EntityFilterConverter(SQLAFilterConverter):
    """FAB's filters per column type, and two of the CRM's: a dictionary field (its stored code) is
    compared whole — equal first, so a filter on 客户类型 starts at 等于 rather than 以开始, and no
    text comparisons —, and a multi-value field (tags) is filtered by the codes it holds."""

    conversion_table = (("is_code", [FilterEqual, FilterNotEqual, FilterIn, FilterNotIn]),
                        ("is_multi", [FilterHasCode, FilterHasNotCode])) + SQLAFilterConverter.conversion_table


def _listed(values: list) -> list:
    """A screen's "In" box is one text: "张三, 李四" is two values (FAB took each character for one)."""
    return [part.strip() for v in values for part in
            (re.split(r"[,，、;；]", v) if isinstance(v, str) else [v]) if str(part).strip()]


class LeanFilters(Filters):
    """FAB's ``Filters`` without building every column's filter objects for each instance.

    FAB's constructor converts all the model's columns (~35 × 2 filter lists) although the copies
    made per request (``get_joined_filters``, ``get_inner_filters``) only carry active filters;
    here the per-column table (``_all_filters``, used by the screens' URL filters) is built when
    first read. Search filters are built as FAB builds them.
    """

    def __init__(self, filter_converter, datamodel, search_columns=None, search_filters=None):
        self.search_columns = search_columns or []
        self.filter_converter = filter_converter
        self.datamodel = datamodel
        self.clear_filters()
        if self.search_columns:
            self._search_filters = self._get_filters(self.search_columns)
        if search_filters:
            for k, v in search_filters.items():
                self._search_filters[k] += v

    def add_filter_index(self, column_name: str, filter_instance_index: int, value: Any):
        """A screen's filter (FAB's ``_flt_<index>_<column>`` URL arguments, a list of texts)."""
        found = self._all_filters.get(column_name) or []
        if 0 <= filter_instance_index < len(found) and isinstance(found[filter_instance_index], (FilterIn, FilterNotIn)) \
                and isinstance(value, (list, tuple)):
            value = _listed(list(value))
        super().add_filter_index(column_name, filter_instance_index, value)

    @property
    def _all_filters(self):
        if "_lean_all_filters" not in self.__dict__:
            columns = list(dict.fromkeys([*self.datamodel.get_columns_list(), *self.search_columns]))  # + tags
            self.__dict__["_lean_all_filters"] = self._get_filters(columns)
        return self.__dict__["_lean_all_filters"]

    @_all_filters.setter
    def _all_filters(self, value):
        self.__dict__["_lean_all_filters"] = value

    def blank(self) -> "LeanFilters":
        """No active filter, the same allowed search columns and operations (one per request,
        instead of clearing and refilling a filter set shared by concurrent requests)."""
        new = LeanFilters(self.filter_converter, self.datamodel)
        new.search_columns = self.search_columns
        new._search_filters = self._search_filters
        return new

    def get_joined_filters(self, filters) -> "LeanFilters":
        ret = LeanFilters(self.filter_converter, self.datamodel)
        ret.filters = self.filters + filters.filters
        ret.values = self.values + filters.values
        return ret

    def copy(self) -> "LeanFilters":
        ret = LeanFilters(self.filter_converter, self.datamodel)
        ret.filters = list(self.filters)
        ret.values = list(self.values)
        return ret


class LeanFiltersMixin:
    """Datamodels whose filter sets are ``LeanFilters``."""

    def get_filters(self, search_columns=None, search_filters=None):
        return LeanFilters(self.filter_converter_class, self, search_columns=search_columns or [],
                           search_filters=search_filters)

    def get_inner_filters(self, filters):
        """FAB's: the non-dotted and to-one filters, re-made on this datamodel."""
        inner = LeanFilters(self.filter_converter_class, self)
        if filters:
            inner.add_filter_list([
                (flt.column_name, flt.__class__, value) for flt, value in zip(filters.filters, filters.values)
                if not is_column_dotted(flt.column_name)
                or self.is_relation_many_to_one(get_column_root_relation(flt.column_name))
                or self.is_relation_one_to_one(get_column_root_relation(flt.column_name))])
        return inner


class EntityInterface(LeanFiltersMixin, SQLAInterface):
    """Lists count at most COUNT_CAP rows (an uncapped COUNT on a large table takes seconds)."""

    filter_converter_class = EntityFilterConverter

    def __init__(self, obj: type, session: Any = None, search_columns: tuple[str, ...] = (),
                 entity: str = "", search_fields: tuple[str, ...] = (), multi_fields: tuple[str, ...] = (),
                 code_columns: tuple[str, ...] = ()):
        self.code_columns = frozenset(code_columns)
        super().__init__(obj, session)
        for key, column in list(self.list_columns.items()):  # a field computed when read (SLA breach):
            stored = obj.__table__.c.get(key)  # FAB's form/type introspection reads its stored column
            if stored is not None and column is not stored:
                self.list_columns[key] = stored
        self.text_columns = search_columns
        self.entity_name = entity
        self.search_fields = search_fields
        self._multi_fields = multi_fields

    def is_code(self, col_name: str) -> bool:
        """A dictionary field's column (one item's code)."""
        return col_name in self.code_columns

    def is_multi(self, col_name: str) -> bool:
        """A multi-value field (its codes in a link table)."""
        return col_name in self._multi_fields

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

    def page(self, filters=None, order_column="", order_direction="", page=None, page_size=None,
             select_columns=None, outer_default_load=False, search: str | None = None, codes=None):
        """``(count, rows, {field: codes per row})``: FAB's ``query`` in as few statements as the
        database allows. The capped count rides on the page's statement as a scalar subquery (unless
        it is the planner's estimate, or the page is empty). With ``codes`` (multi-value field names;
        the API) the rows are ``Row`` tuples of the mapped columns, read by attribute as objects
        are, and the rows' codes come as aggregates of that statement too, instead of one more
        statement loading the link rows; without (the screens) they are ORM objects.

        With ``codes`` the statements are built once per user's policy and request shape (filters,
        order, page, search) and kept while the auth epoch holds (``principals.Plans``, the most
        recently used): building them — FAB's filters and ordering, the row scope, the count
        parts — cost a third of the page's time."""
        if codes is None or select_columns or outer_default_load or not self.entity_name:
            plan = self._plan(filters, order_column, order_direction, page, page_size, select_columns,
                              outer_default_load, search, codes)
        else:
            shape = _plan_key(self.obj, filters, order_column, order_direction, page, page_size, search, codes)
            plans = context.build().auth.plans() if shape is not None else None
            key = (context.policy(), shape)  # the policy itself: kept with the plan, never mistaken for another
            plan = plans.get(key) if plans is not None else None
            if plan is None:
                plan = self._plan(filters, order_column, order_direction, page, page_size, select_columns,
                                  outer_default_load, search, codes)
                if plans is not None:
                    plans.put(key, plan)
        estimated = plan.wide and counting.above_cap(self.session, self.obj.__table__.name, plan.selects, COUNT_CAP)
        if plan.plain is not None:
            rows = plan.plain.all()
            return (COUNT_CAP if estimated else counting.capped_count(self.session, plan.selects, COUNT_CAP)), rows, {}
        statement = plan.estimated if estimated else plan.counted
        if codes is None:  # ORM objects
            result = self.session.execute(statement).all()
            rows = [r[0] for r in result]
        else:  # columns only: the Core execution path, without the ORM's per-statement work
            rows = result = self._read(statement)
        first = plan.width + (0 if estimated else 1)
        if estimated:  # the planner is sure: "10,000+" without walking 10,001 rows
            count = COUNT_CAP
        elif result:  # the count rode on the page's statement
            count = min(result[0][plan.width], COUNT_CAP)
        else:  # an empty page: nothing carried the count
            count = counting.capped_count(self.session, plan.selects, COUNT_CAP)
        decode = _CODES_DECODERS[self.session.get_bind().dialect.name]
        values = {name: [decode(r[first + i]) for r in result] for i, name in enumerate(plan.folded)}
        return count, rows, values

    def _read(self, statement) -> list:
        """The rows of ``statement``. On PostgreSQL, for a read (GET/HEAD) whose session has not
        begun (every warm list request: the page is its one statement), on a connection of its own
        in autocommit: one statement needs no transaction around it, and BEGIN and ROLLBACK were two
        of its round trips. The session is left as it was (an app context that outlives the request
        keeps a plain session), and the connection goes back to the pool with its isolation level
        restored."""
        session = self.session
        current = session() if hasattr(session, "registry") else session  # a scoped_session's Session
        bind = current.get_bind(self.obj)
        if not current.in_transaction() and principals.reading() and bind.dialect.name == "postgresql":
            with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                return conn.execute(statement).all()
        return current.connection(bind_arguments={"mapper": self.obj.__mapper__}).execute(statement).all()

    def _plan(self, filters, order_column, order_direction, page, page_size, select_columns,
              outer_default_load, search, codes) -> "PagePlan":
        unscoped = self.text_search(self.session.query(self.obj), search)
        query = self.scoped(unscoped)
        ones = self.text_search(self.session.query(ONE).select_from(self.obj), search)
        parts = context.policy().count_parts(self.entity_name, self.obj) if self.entity_name else None
        if parts:  # disjoint parts of the row scope, each counted up to the cap, in one statement
            counted = self.apply_filters(ones, filters).order_by(None)
            selects = [counted.filter(p).statement for p in parts]
        else:
            selects = [self.apply_filters(self.scoped(ones), filters).order_by(None).statement]
        # An `own` scope is about one person's records: counted exactly, no planner round trip first.
        wide = bool(parts) or context.policy().access(self.entity_name).scope in ("all", None) \
            if self.entity_name else True
        query = self.apply_all(query, filters, order_column, order_direction, page, page_size,
                               select_columns, outer_default_load)
        if select_columns:  # FAB's query of chosen columns, and its count, as FAB runs them
            return PagePlan(selects, wide, plain=query)
        count_column = counting.capped_total(selects, COUNT_CAP).label("crm_count")
        if codes is None:  # the screens: ORM objects (their templates follow relationships)
            return PagePlan(selects, wide, counted=query.add_columns(count_column).statement,
                            estimated=query.statement, width=1)
        folded = self._codes_columns(codes)
        # the API: the rows as tuples of the mapped columns (computed ones included), not as ORM
        # objects — building 25 objects with their identity-map state cost more than the statement.
        # Each labelled with its attribute's name: on the Core path a row's keys are the columns'
        # names, and a computed attribute (SLA's `sla_breached`) would give its name to the stored column.
        columns = [getattr(self.obj, prop.key).label(prop.key) for prop in self.obj.__mapper__.column_attrs]
        counted = query.with_entities(*columns, count_column, *folded.values()).statement
        estimated = query.with_entities(*columns, *folded.values()).statement
        return PagePlan(selects, wide, counted=counted, estimated=estimated, folded=tuple(folded),
                        width=len(columns))

    def query(self, filters=None, order_column="", order_direction="", page=None, page_size=None,
              select_columns=None, outer_default_load=False, search: str | None = None):
        count, rows, _ = self.page(filters, order_column, order_direction, page, page_size, select_columns,
                                   outer_default_load, search)
        return count, rows

    @property
    def multi_fields(self) -> tuple[str, ...]:
        """The entity's multi-value fields (codes in a link table, read through ``<name>_links``)."""
        return tuple(name for name in getattr(self, "_multi_fields", ()) if hasattr(self.obj, f"{name}_links"))

    def _codes_columns(self, names) -> dict:
        """Per multi-value field in ``names``: a column of the page's statement holding the row's
        codes (PostgreSQL: an array in the relationship's order; SQLite: a JSON array, put in that
        order by ``_CODES_DECODERS``). Empty on other databases (the relationships load them)."""
        dialect = self.session.get_bind().dialect.name
        if dialect not in _CODES_DECODERS:
            return {}
        out = {}
        for name in names:
            if name not in self.multi_fields:
                continue
            rel = getattr(self.obj, f"{name}_links").property
            link = rel.mapper.local_table
            code = link.c.get("code")
            order = rel.order_by or ()
            if code is None or len(order) != 1 or order[0] is not code or len(rel.local_remote_pairs) != 1:
                continue  # not the shape of crm_meta.db.tables._link: the relationship loads it
            (local, remote), = rel.local_remote_pairs  # the entity's id ← the link's record_id
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import aggregate_order_by, array_agg

                agg = array_agg(aggregate_order_by(code, code))
            else:
                agg = func.json_group_array(code)
            out[name] = select(agg).where(remote == local).scalar_subquery().label(f"crm_codes_{name}")
        return out

    def get(self, id, filters=None, select_columns=None, outer_default_load=False):
        """One row, only when the user may read it (else None: the caller answers 404)."""
        try:
            pk = int(id)
        except (TypeError, ValueError):
            return None
        return self.scoped(self.session.query(self.obj).filter(self.obj.id == pk)).one_or_none()


class RelatedInterface(LeanFiltersMixin, SQLAInterface):
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
                           entity=entity.name, search_fields=tuple(entity.search_fields),
                           multi_fields=tuple(f.name for f in entity.fields if f.is_multi),
                           code_columns=tuple(f.column for f in entity.fields if f.storage == "code"))
