"""Customer 360° (客户全景): one customer with every record that refers to it, as one viewer may see it.

Framework-free (SQLAlchemy, the metadata and the access policy). The related lists are found from
the metadata — every field of type ``reference`` with ``entity: customer``, in dictionary order — so
a new entity that points at customers shows up without code. Each list is subject to the policy
like every other read:

* an entity the viewer may not read is left out entirely (no section, no count);
* a section whose link field is hidden from the viewer is left out too (it would reveal the link);
* rows are the ones ``policy.scope`` lets through, the newest (entity sort order) first, at most
  ``limit`` per section, with a count capped like the lists' (``COUNT_CAP``);
* columns are the entity's list columns (plus its SLA / cadence fields when declared), without the
  link back to the customer and without the fields hidden from the viewer; masking is the caller's
  job at display time (``policy.display`` / ``policy.project``).

The customer itself must be read with the viewer's ``RecordService.get`` (404 out of scope) before
calling :func:`gather`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm_meta.metadata.model import Entity, Field, Registry

COUNT_CAP = 10_000
LIMIT = 50
CUSTOMER = "customer"
# Fields other features add (follow-up cadence, ticket SLAs): shown when the entity declares them.
CLOCK_FIELDS = ("next_follow_up_at", "dispatch_department", "response_due_at", "resolve_due_at", "sla_breached")
# due field → the field that stops its clock (a due time counts down only while that one is empty)
DUE_FIELDS = {"next_follow_up_at": None, "response_due_at": "responded_at", "resolve_due_at": "resolved_at"}
BREACHED_FIELD = "sla_breached"
OPEN_CLOCK = ("resolve_due_at", "resolved_at")  # a ticket's SLA clock runs while due is set and not resolved


@dataclass
class Section:
    """The records of one entity that point at the customer through one reference field."""

    entity: Entity
    link: Field
    columns: list[Field]
    rows: list[Any]
    count: int
    capped: bool
    several_links: bool = False  # the entity refers to customers through more than one field
    breached: int | None = None  # tickets past an SLA (when the entity has `sla_breached`)
    open_clocks: int | None = None  # tickets whose resolution clock runs (resolve_due_at set, not resolved)

    @property
    def key(self) -> str:
        return f"{self.entity.name}__{self.link.name}" if self.several_links else self.entity.name


@dataclass
class View:
    customer: Any
    fields: list[Field]  # the customer's key fields the viewer may see
    sections: list[Section] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # status moves, newest first
    next_follow_up: Any = None  # customer.next_follow_up_at when declared and visible


def links_to(registry: Registry, target: str = CUSTOMER) -> list[tuple[Entity, Field]]:
    """(entity, reference field) for every field that points at ``target``, in dictionary order."""
    return [(e, f) for e in registry.entities for f in e.fields
            if f.type == "reference" and f.entity == target]


def key_fields(entity: Entity, hidden: Any) -> list[Field]:
    """The customer's key fields: its list columns and the cadence field, minus hidden ones."""
    names = list(entity.list_fields) + [n for n in CLOCK_FIELDS if entity.has_field(n)]
    out, seen = [], set()
    for name in names:
        if name in seen or name in hidden or not entity.has_field(name):
            continue
        seen.add(name)
        out.append(entity.field(name))
    return out


def section_columns(entity: Entity, link: Field, hidden: Any) -> list[Field]:
    """The list columns (and SLA / cadence fields) of a section, without the link back, the title
    (each row starts with it, as a link) and the fields hidden from the viewer."""
    names = list(entity.list_fields) + [n for n in CLOCK_FIELDS if entity.has_field(n)]
    out, seen = [], {link.name, entity.title}
    for name in names:
        if name in seen or name in hidden or not entity.has_field(name):
            continue
        seen.add(name)
        out.append(entity.field(name))
    return out


def _order(entity: Entity, model: Any) -> list[Any]:
    f = entity.field(entity.sort_field) if entity.has_field(entity.sort_field) else None
    if f is None or f.is_multi:
        return [model.id.desc()]
    col = getattr(model, f.column)
    return [col.desc() if entity.sort_desc else col.asc(), model.id.desc()]


def related(session: Session, models: Any, policy: Any, entity: Entity, link: Field, customer_id: int,
            *, limit: int = LIMIT) -> Section | None:
    """One section, or None when the viewer may not read the entity or see the link."""
    access = policy.access(entity.name)
    if not access.can("read") or link.name in access.hidden:
        return None
    model = models.model(entity.name)
    where = select(model).where(getattr(model, link.column) == customer_id)
    if entity.name == CUSTOMER:
        where = where.where(model.id != customer_id)
    stmt = policy.scope(entity.name, where, model)
    rows = list(session.execute(stmt.order_by(*_order(entity, model)).limit(limit)).scalars())
    if len(rows) < limit:
        count, capped = len(rows), False
    else:
        inner = stmt.with_only_columns(model.id).order_by(None).limit(COUNT_CAP + 1).subquery()
        n = session.execute(select(func.count()).select_from(inner)).scalar_one()
        count, capped = min(n, COUNT_CAP), n > COUNT_CAP
    section = Section(entity, link, section_columns(entity, link, access.hidden), rows, count, capped)
    if entity.has_field(BREACHED_FIELD) and BREACHED_FIELD not in access.hidden:
        col = getattr(model, entity.field(BREACHED_FIELD).column)
        inner = stmt.where(col.is_(True)).with_only_columns(model.id).order_by(None).limit(COUNT_CAP + 1).subquery()
        section.breached = session.execute(select(func.count()).select_from(inner)).scalar_one()
    due, done = OPEN_CLOCK
    if all(entity.has_field(n) and n not in access.hidden for n in OPEN_CLOCK):
        running = stmt.where(getattr(model, entity.field(due).column).isnot(None),
                             getattr(model, entity.field(done).column).is_(None))
        inner = running.with_only_columns(model.id).order_by(None).limit(COUNT_CAP + 1).subquery()
        section.open_clocks = session.execute(select(func.count()).select_from(inner)).scalar_one()
    return section


def status_history(session: Session, models: Any, policy: Any, customer: Any,
                   sections: list[Section]) -> list[dict]:
    """The customer's status moves and those of the listed records that have a pipeline, newest first.

    Uses crm_meta.services.pipelines.history when that module exists (nothing otherwise); moves of a
    field hidden from the viewer are left out. Each row gets ``entity`` and ``record_id``.
    """
    try:
        from crm_meta.services import pipelines
    except ImportError:
        return []
    history = getattr(pipelines, "history", None)
    if history is None or "status_history" not in getattr(models, "system", {}):
        return []
    registry = models.registry
    wanted: list[tuple[str, Any]] = [(CUSTOMER, customer)]
    pipelined = getattr(registry, "pipelines_of", None)
    for s in sections:
        if pipelined is not None and pipelined(s.entity.name):
            wanted += [(s.entity.name, row) for row in s.rows]
    out = []
    for entity_name, record in wanted:
        hidden = policy.access(entity_name).hidden
        for row in history(session, models, entity_name, record.id):
            if row.get("field") and row["field"] in hidden:
                continue
            out.append({**row, "entity": entity_name, "record_id": record.id, "record": record})
    out.sort(key=lambda r: (r.get("at") or datetime.min, r.get("id") or 0), reverse=True)
    return out


def gather(session: Session, models: Any, policy: Any, customer: Any, *, limit: int = LIMIT) -> View:
    """Everything the 360° page shows of ``customer`` (already read through the viewer's policy)."""
    entity = models.registry.entity(CUSTOMER)
    access = policy.access(CUSTOMER)
    view = View(customer, key_fields(entity, access.hidden))
    pairs = links_to(models.registry)
    counts = Counter(e.name for e, _ in pairs)
    for e, link in pairs:
        section = related(session, models, policy, e, link, customer.id, limit=limit)
        if section is not None:
            section.several_links = counts[e.name] > 1
            view.sections.append(section)
    view.history = status_history(session, models, policy, customer, view.sections)
    if entity.has_field("next_follow_up_at") and "next_follow_up_at" not in access.hidden:
        view.next_follow_up = getattr(customer, entity.field("next_follow_up_at").column, None)
    return view
