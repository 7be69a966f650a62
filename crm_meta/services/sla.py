"""Ticket SLAs (反馈工单): due times from the priority, response/resolution stamps from the status,
the breach scan and escalation to the dispatch department's manager.

Declared in the dictionary, not in code:

* ``ticket_priority`` items (the dictionary of ``feedback.priority``): ``response_hours`` and
  ``resolve_hours`` (positive numbers) and ``escalate: manager`` — a breach of a ticket with that
  priority notifies the managers (``crm_member.is_manager``) of the ticket's ``dispatch_department``;
* ``feedback_status`` items (the dictionary of ``feedback.status``): ``responded: true`` stops the
  response clock, ``resolved: true`` stops both (default when no item says anything: every status
  but ``open`` responds, ``handled`` and ``closed`` resolve).

``response_due_at`` / ``resolve_due_at`` = the ticket's ``created_at`` + the hours (recomputed when
the priority changes); ``responded_at`` / ``resolved_at`` are stamped by the after-update hook when
the status value moves into such a status (whichever path moved it: a plain edit, REST, or a
pipeline transition), ``resolved_at`` is cleared when a ticket is reopened.

**Breached is worked out when read, not written by a job.** A ticket is breached when a clock
stopped late (answered or resolved after its due time: the hooks record that verdict in the stored
``sla_breached`` / ``sla_breached_at`` columns) or when a clock is still running past its due time
at the moment of the query. ``computed_columns`` makes the model's ``sla_breached`` and
``sla_breached_at`` attributes that SQL expression (``now`` bound at execution from ``clock``), so
the list, filters, sorting, REST, the ticket page, the breach list and the dashboard all show a
breach the minute it happens, with no scan in between; ``sla_breached_at`` is the due time that
was missed. ``scan`` therefore writes nothing to the tickets (a catch-up after days without the job
used to rewrite 160,000 ticket rows: 6.9 s on PostgreSQL, bench/process.py): it counts the tickets
that breached since the previous scan and sends the escalation notices — ONE INSERT … SELECT.
Framework-free; times from ``clock``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, String, and_, bindparam, case, cast, func, literal, or_, select
from sqlalchemy.orm import Session

from crm_meta.db.tables import ModelSet
from crm_meta.services import clock, notifications
from crm_meta.services.derived import dictionary_attrs, positive, store, unstamped

FEEDBACK = "feedback"
PRIORITY, STATUS, DISPATCH = "priority", "status", "dispatch_department"
RESPONSE_DUE, RESOLVE_DUE = "response_due_at", "resolve_due_at"
RESPONDED, RESOLVED = "responded_at", "resolved_at"
BREACHED, BREACHED_AT = "sla_breached", "sla_breached_at"
SLA_FIELDS = (RESPONSE_DUE, RESOLVE_DUE, RESPONDED, RESOLVED, BREACHED, BREACHED_AT)
ESCALATE_ATTR, ESCALATE_VALUES = "escalate", ("manager",)
DEFAULT_OPEN, DEFAULT_RESOLVED = ("open",), ("handled", "closed")
SOON = timedelta(hours=4)
LIST_LIMIT = 100
SCANNED_KEY = "sla:scanned_until"  # crm_schema_state: the `now` of the last scan (its window's end)


@dataclass(frozen=True)
class Settings:
    hours: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # priority → (respond, resolve)
    escalate: dict[str, str] = field(default_factory=dict)  # priority → "manager"
    responded: frozenset[str] | None = None  # statuses that stop the response clock (None: all but open)
    resolved: frozenset[str] = frozenset(DEFAULT_RESOLVED)

    def responds(self, status: str | None) -> bool:
        if status is None:
            return False
        if status in self.resolved:
            return True
        return status in self.responded if self.responded is not None else status not in DEFAULT_OPEN

    def resolves(self, status: str | None) -> bool:
        return status is not None and status in self.resolved


def enabled(models: ModelSet) -> bool:
    if FEEDBACK not in models.models:
        return False
    e = models.registry.entity(FEEDBACK)
    return e.has_field(PRIORITY) and all(e.has_field(f) for f in SLA_FIELDS)


def settings(session: Session, models: ModelSet) -> Settings:
    """The SLA declarations as stored in the dictionary items (admin edits included)."""
    e = models.registry.entity(FEEDBACK)
    hours, escalate = {}, {}
    for code, attrs in dictionary_attrs(session, models, e.field(PRIORITY).dictionary).items():
        hours[code] = (positive(attrs.get("response_hours")), positive(attrs.get("resolve_hours")))
        if attrs.get(ESCALATE_ATTR) in ESCALATE_VALUES:
            escalate[code] = attrs[ESCALATE_ATTR]
    responded, resolved = None, frozenset(DEFAULT_RESOLVED)
    if e.has_field(STATUS):
        items = dictionary_attrs(session, models, e.field(STATUS).dictionary)
        if any("responded" in a or "resolved" in a for a in items.values()):
            resolved = frozenset(c for c, a in items.items() if a.get("resolved") is True)
            responded = frozenset(c for c, a in items.items() if a.get("responded") is True) | resolved
    return Settings(hours, escalate, responded, resolved)


def due_times(created_at: datetime | None, priority: str | None, s: Settings) -> tuple[datetime | None, datetime | None]:
    respond, resolve = s.hours.get(priority, (None, None)) if priority else (None, None)
    if created_at is None:
        return None, None
    return (created_at + timedelta(hours=respond) if respond else None,
            created_at + timedelta(hours=resolve) if resolve else None)


def _late(done: datetime | None, due: datetime | None) -> bool:
    return done is not None and due is not None and done > due


def verdict(responded: datetime | None, resolved: datetime | None, response_due: datetime | None,
            resolve_due: datetime | None) -> tuple[bool, datetime | None]:
    """The recorded part of a breach: a clock that stopped after its due time, and the earliest due
    time so missed (clocks still running are judged when read: ``breached_condition``)."""
    missed = [due for done, due in ((responded, response_due), (resolved, resolve_due)) if _late(done, due)]
    return (True, min(missed)) if missed else (False, None)


# -- record hooks ----------------------------------------------------------------------------------

def on_ticket_created(session: Session, models: ModelSet, record: Any) -> None:
    if not enabled(models):
        return
    s, now = settings(session, models), clock.now()
    status = getattr(record, STATUS, None)
    response_due, resolve_due = due_times(record.created_at, getattr(record, PRIORITY), s)
    responded = now if s.responds(status) else None
    resolved = now if s.resolves(status) else None
    breached, at = verdict(responded, resolved, response_due, resolve_due)
    store(session, record, {RESPONSE_DUE: response_due, RESOLVE_DUE: resolve_due, RESPONDED: responded,
                            RESOLVED: resolved, BREACHED: breached, BREACHED_AT: at})


def _stored(record: Any) -> dict[str, Any]:
    """The SLA columns as stored, read through the attributes mapped to them (``sla_breached`` /
    ``sla_breached_at`` themselves read the live value when computed: ``computed_columns``)."""
    mapper, t = type(record).__mapper__, type(record).__table__
    return {f: getattr(record, mapper.get_property_by_column(t.c[f]).key) for f in SLA_FIELDS}


def on_ticket_updated(session: Session, models: ModelSet, record: Any, changes: dict) -> None:
    if not enabled(models) or not (PRIORITY in changes or STATUS in changes):
        return
    s, now = settings(session, models), clock.now()
    cur = _stored(record)
    values: dict[str, Any] = {}
    if PRIORITY in changes:
        values[RESPONSE_DUE], values[RESOLVE_DUE] = due_times(record.created_at, getattr(record, PRIORITY), s)
    if STATUS in changes:
        status = getattr(record, STATUS, None)
        if s.responds(status) and cur[RESPONDED] is None:
            values[RESPONDED] = now
        if s.resolves(status):
            if cur[RESOLVED] is None:
                values[RESOLVED] = now
        elif cur[RESOLVED] is not None:  # reopened: the resolution clock runs again
            values[RESOLVED] = None
    new = {**cur, **values}
    values[BREACHED], values[BREACHED_AT] = verdict(new[RESPONDED], new[RESOLVED], new[RESPONSE_DUE], new[RESOLVE_DUE])
    store(session, record, {k: v for k, v in values.items() if v != cur.get(k)})


# -- breached, as read ---------------------------------------------------------------------------------

def _running_late(c: Any, done: str, due: str, now: Any):
    return and_(c[done].is_(None), c[due] < now)


def breached_condition(c: Any, now: Any):
    """SQL: the ticket is breached at ``now`` (``c``: its columns by name, stored ones included)."""
    return or_(c[BREACHED].is_(True), _running_late(c, RESPONDED, RESPONSE_DUE, now),
               _running_late(c, RESOLVED, RESOLVE_DUE, now))


def breached_at_expression(c: Any, now: Any):
    """SQL: when the ticket breached (the earliest due time missed), NULL when it has not (yet)."""
    response, resolution = _running_late(c, RESPONDED, RESPONSE_DUE, now), _running_late(c, RESOLVED, RESOLVE_DUE, now)
    return case((and_(c[BREACHED].is_(True), c[BREACHED_AT].is_not(None)), c[BREACHED_AT]),
                (and_(response, resolution, c[RESOLVE_DUE] < c[RESPONSE_DUE]), c[RESOLVE_DUE]),
                (response, c[RESPONSE_DUE]), (resolution, c[RESOLVE_DUE]), else_=None)


def _now_parameter():
    return bindparam("sla_now", type_=DateTime(), callable_=clock.now)  # evaluated per execution


def computed_columns(entity: Any, columns: dict[str, Any]) -> dict[str, Any]:
    """``sla_breached`` / ``sla_breached_at`` read live (``crm_meta.db.tables.build_models``)."""
    if entity.name != FEEDBACK or not all(entity.has_field(f) for f in SLA_FIELDS):
        return {}
    c = {f: columns[entity.field(f).column] for f in SLA_FIELDS}
    now = _now_parameter()
    return {BREACHED: case((breached_condition(c, now), True), else_=False),
            BREACHED_AT: breached_at_expression(c, now)}


def _columns(models: ModelSet) -> dict[str, Any]:
    t = models.model(FEEDBACK).__table__
    return {f: t.c[models.registry.entity(FEEDBACK).field(f).column] for f in SLA_FIELDS}


# -- the scan (crm sla scan, job sla_scan): escalation ---------------------------------------------

@dataclass(frozen=True)
class ScanResult:
    at: datetime
    breached: int
    escalated: int


def _since(session: Session, models: ModelSet) -> datetime | None:
    state = models.system["state"]
    raw = session.execute(select(state.c.value).where(state.c.key == SCANNED_KEY)).scalar()
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _mark(session: Session, models: ModelSet, now: datetime) -> None:
    state = models.system["state"]
    value = now.isoformat()
    if session.execute(state.update().where(state.c.key == SCANNED_KEY).values(value=value)).rowcount == 0:
        session.execute(notifications.dialect_insert(session, state).values(key=SCANNED_KEY, value=value)
                        .on_conflict_do_nothing(index_elements=["key"]))


def _window(c: Any, now: datetime, since: datetime | None, *touched: Any):
    """Breached at ``now``, and the breach happened after ``since`` (None: ever) — or, with
    ``touched`` conditions, the ticket matches one of them."""
    if since is None:
        return breached_condition(c, now)
    return and_(breached_condition(c, now), or_(breached_at_expression(c, now) > since, *touched))


def escalation_statement(session: Session, models: ModelSet, now: datetime, since: datetime | None,
                         priorities: list[str]):
    """ONE INSERT … SELECT: a notice to each manager of the dispatch department of every ticket of
    an escalating priority that breached after ``since`` or was changed since then (a priority
    raised on an old ticket breaches it at once, its missed due time lying before the window);
    ON CONFLICT DO NOTHING: once per ticket and manager, whatever the windows."""
    t = models.model(FEEDBACK).__table__
    c = _columns(models)
    member = models.system["member"]
    entity = models.registry.entity(FEEDBACK)
    number = t.c[entity.field(entity.title).column] if entity.title else cast(t.c.id, String)
    dialect = session.get_bind().dialect.name
    json_object = func.json_build_object if dialect == "postgresql" else func.json_object
    source = (select(member.c.user_id, literal(notifications.SLA_BREACH), literal(FEEDBACK), t.c.id,
                     literal("工单 ") + number + literal(" 已超过处理时限，已升级"),
                     json_object("no", number, "priority", t.c[PRIORITY]),
                     literal("feedback:") + cast(t.c.id, String), literal(now))
              .select_from(t.join(member, and_(member.c.department == t.c[DISPATCH], member.c.is_manager.is_(True))))
              .where(t.c[PRIORITY].in_(priorities), _window(c, now, since, *([t.c.updated_at > since] if since else []))))
    n = models.system["notification"]
    insert = notifications.insert_ignoring_duplicates(session, n)
    return insert.from_select(["user_id", "kind", "entity", "record_id", "message", "detail", "dedupe_key",
                               "created_at"], source).returning(n.c.id)  # rowcount is -1 on psycopg here


def scan(session: Session, models: ModelSet, now: datetime | None = None) -> ScanResult:
    """Count the tickets that breached since the last scan and escalate those whose priority says
    so; remember ``now`` as the next window's start. Writes no ticket. No commit."""
    now = now or clock.now()
    if not enabled(models):
        return ScanResult(now, 0, 0)
    since = _since(session, models)
    if since is not None and since >= now:  # the clock went back (or a scan at the same instant): nothing new
        return ScanResult(now, 0, 0)
    t = models.model(FEEDBACK).__table__
    breached = session.execute(select(func.count()).select_from(t).where(_window(_columns(models), now, since))).scalar_one()
    escalated = 0
    if models.registry.entity(FEEDBACK).has_field(DISPATCH):
        priorities = sorted(settings(session, models).escalate)
        if priorities:
            escalated = len(session.execute(escalation_statement(session, models, now, since, priorities)).all())
    _mark(session, models, now)
    return ScanResult(now, breached, escalated)


# -- reading: breach list, dashboard counts, time left ------------------------------------------------

def soon_condition(c: Any, now: datetime):
    later = now + SOON
    return and_(~breached_condition(c, now), c[RESOLVED].is_(None),
                or_(c[RESOLVE_DUE] < later, and_(c[RESPONDED].is_(None), c[RESPONSE_DUE] < later)))


def counts(session: Session, models: ModelSet, policy: Any, now: datetime | None = None) -> dict[str, int]:
    """Open breached tickets, breaches in the last 7 days and tickets due within 4 hours — within the
    user's row scope (one query)."""
    if not enabled(models):
        return {"open_breached": 0, "breached_7d": 0, "due_soon": 0}
    now = now or clock.now()
    model = models.model(FEEDBACK)
    c = _columns(models)
    open_breached = and_(breached_condition(c, now), c[RESOLVED].is_(None))
    week = breached_at_expression(c, now) >= now - timedelta(days=7)
    soon = soon_condition(c, now)
    stmt = select(func.sum(case((open_breached, 1), else_=0)), func.sum(case((week, 1), else_=0)),
                  func.sum(case((soon, 1), else_=0))).select_from(model.__table__)
    row = session.execute(policy.scope(FEEDBACK, stmt, model)).one()
    return {"open_breached": int(row[0] or 0), "breached_7d": int(row[1] or 0), "due_soon": int(row[2] or 0)}


def tickets(session: Session, models: ModelSet, policy: Any, which: str, now: datetime | None = None,
            limit: int = LIST_LIMIT) -> list[dict]:
    """``breached``: open breached tickets, latest breach first; ``soon``: open tickets due within 4
    hours, earliest first — rows the user may read (the customer's name joined in)."""
    if not enabled(models):
        return []
    now = now or clock.now()
    model = models.model(FEEDBACK)
    entity = models.registry.entity(FEEDBACK)
    c = _columns(models)
    at = breached_at_expression(c, now)
    cols = [model.id, getattr(model, f"{entity.owner_field}_id").label("owner_id")] + \
        [c[f].label(f) for f in (RESPONSE_DUE, RESOLVE_DUE, RESPONDED, RESOLVED)] + \
        [case((breached_condition(c, now), True), else_=False).label(BREACHED), at.label(BREACHED_AT)]
    for name in (entity.title, PRIORITY, STATUS, DISPATCH, "feedback_type"):
        if name and entity.has_field(name) and name not in policy.access(FEEDBACK).hidden:
            cols.append(model.__table__.c[entity.field(name).column].label(name))
    if entity.has_field("customer"):
        cols.append(model.__table__.c[entity.field("customer").column].label("_customer_id"))
    stmt = select(*cols).select_from(model.__table__)
    if which == "breached":
        stmt = stmt.where(breached_condition(c, now), c[RESOLVED].is_(None)).order_by(at.desc(), model.id)
    else:
        stmt = stmt.where(soon_condition(c, now)).order_by(c[RESOLVE_DUE], model.id)
    page = policy.scope(FEEDBACK, stmt, model).limit(limit).subquery()
    # the page first, then its customers' names: joining before the sort looked up a customer for
    # every breached ticket (SQLite: 0.29 s for 160,000 of them, bench/process.py)
    outer = [col for col in page.c if col.name != "_customer_id"]
    query = select(*outer).select_from(page)
    title = models.registry.entity("customer").title if "customer" in models.models else None
    if entity.has_field("customer") and title:
        customer = models.model("customer").__table__
        query = select(*outer, customer.c[title].label("customer_name")).select_from(
            page.outerjoin(customer, customer.c.id == page.c._customer_id))
    order = [page.c[BREACHED_AT].desc(), page.c.id] if which == "breached" else [page.c[RESOLVE_DUE], page.c.id]
    return [dict(r._mapping) for r in session.execute(query.order_by(*order))]


def duration_text(delta: timedelta, lang: str) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    en = lang.startswith("en")
    parts = []
    if days:
        parts.append(f"{days}d" if en else f"{days}天")
    if hours:
        parts.append(f"{hours}h" if en else f"{hours}小时")
    if mins and not days:
        parts.append(f"{mins} min" if en else f"{mins}分钟")
    return (" " if en else "").join(parts) or ("< 1 min" if en else "不足1分钟")


def time_left(due: datetime | None, done: datetime | None, now: datetime, lang: str) -> str:
    """What a due time means now: time left, overdue by, or met / missed once done."""
    if due is None:
        return ""
    en = lang.startswith("en")
    if done is not None:
        if done <= due:
            return "met" if en else "按时完成"
        return f"{duration_text(done - due, lang)} late" if en else f"超时 {duration_text(done - due, lang)} 完成"
    if due >= now:
        return f"{duration_text(due - now, lang)} left" if en else f"剩余 {duration_text(due - now, lang)}"
    return f"overdue by {duration_text(now - due, lang)}" if en else f"已超时 {duration_text(now - due, lang)}"


def backfill(session: Session, models: ModelSet, *, answered: str = "keep") -> int:
    """Recompute every ticket's due times from ``created_at`` (after a bulk load or back-dating,
    e.g. demo data). ``answered="midpoint"``: tickets already in an answered/resolved status get
    ``responded_at`` / ``resolved_at`` half-way to their due time (demo data has no history of its
    status changes). Then the recorded verdicts follow (clocks stopped late). Row by row; no commit."""
    if not enabled(models):
        return 0
    s = settings(session, models)
    model = models.model(FEEDBACK)
    t = model.__table__
    has_status = STATUS in t.c
    rows, now = [], clock.now()
    for r in session.execute(select(t.c.id, t.c.created_at, t.c[PRIORITY].label("priority"),
                                    *([t.c[STATUS].label("status")] if has_status else []),
                                    t.c[RESPONDED].label("responded"), t.c[RESOLVED].label("resolved"))):
        status = r.status if has_status else None
        response_due, resolve_due = due_times(r.created_at, r.priority, s)
        responded, resolved = r.responded, r.resolved
        if answered == "midpoint" and r.created_at is not None:
            def half(due, hours):  # not later than now: a ticket entered an hour ago was not resolved tomorrow
                return min(r.created_at + (due - r.created_at) / 2 if due else r.created_at + timedelta(hours=hours),
                           max(now, r.created_at))
            responded = half(response_due, 1) if s.responds(status) else None
            resolved = half(resolve_due, 4) if s.resolves(status) else None
            responded = min(responded, resolved) if responded and resolved else responded
        breached, at = verdict(responded, resolved, response_due, resolve_due)
        rows.append({"_id": r.id, "_rd": response_due, "_sd": resolve_due, "_ra": responded, "_sa": resolved,
                     "_b": breached, "_ba": at})
    if rows:
        session.execute(t.update().where(t.c.id == bindparam("_id")).values({"updated_at": t.c.updated_at,
            RESPONSE_DUE: bindparam("_rd"), RESOLVE_DUE: bindparam("_sd"), RESPONDED: bindparam("_ra"),
            RESOLVED: bindparam("_sa"), BREACHED: bindparam("_b"), BREACHED_AT: bindparam("_ba")}), rows)
    return len(rows)
