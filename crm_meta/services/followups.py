"""Follow-up cadence (跟进计划): each customer's next follow-up due from its grade, late logging,
the day's reminders per owner, and "my follow-ups".

* ``customer.next_follow_up_at`` = (date of the last follow-up, or the date the customer was
  entered) + the ``cadence_days`` attribute of the customer's grade (dictionary item attrs, e.g.
  A 7, B 14, C 30). No grade or no cadence: no due date, no reminder.
* ``customer.last_follow_up_at`` = the latest ``follow_up.followed_at`` of the customer.
* Both are recomputed when a follow-up is logged, changed or deleted and when the grade changes
  (record hooks in ``crm_meta/process.py``; same transaction as the change).
* ``follow_up.late``: logged (``created_at``) more than 24 hours after the contact it describes
  (``followed_at``, a local wall-clock time like every datetime people type).
* A change of a grade's ``cadence_days`` recomputes the due date of every customer of that grade
  (``recompute_cadence``: ONE UPDATE per grade); ``crm remind`` and the reminder job first apply
  cadence changes not applied yet (``apply_cadence_changes``: the cadences last applied are kept in
  ``crm_schema_state``), whichever way they were made (the data-dictionary screen, the YAML sync at
  start-up, SQL).
* Pipeline effect ``follow_up`` (``follow_up_task``): a move makes the record's customer due within
  ``in_days`` days (unless it is due earlier already) and notifies the customer's owner. Logging a
  follow-up, a grade change or a cadence change computes the due date from the cadence again.
* ``reminders(day)``: ONE grouped query over ``customer`` — per owner, how many customers are due
  that day and how many are overdue; ``remind`` stores them as notifications (once per owner and
  day) for ``flask crm remind`` and the daily job.

Framework-free: a SQLAlchemy session and the ModelSet; the time comes from ``clock``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import Date, Integer, and_, case, cast, false, func, literal, null, or_, select, update
from sqlalchemy.orm import Session

from crm_meta.db.tables import ModelSet
from crm_meta.metadata.model import FollowUpTask, Label
from crm_meta.services import clock, notifications
from crm_meta.services.records import title_of
from crm_meta.services.derived import dictionary_attrs, positive, store, store_row, unstamped

CUSTOMER, FOLLOW_UP = "customer", "follow_up"
GRADE, NEXT, LAST = "grade", "next_follow_up_at", "last_follow_up_at"
FOLLOWED_AT, LATE, REF = "followed_at", "late", "customer"
CADENCE_ATTR = "cadence_days"
CADENCE_STATE = "followups:cadence"  # crm_schema_state: the cadences the due dates were computed with
LATE_AFTER = timedelta(hours=24)
UPCOMING_DAYS = 7
AGENDA_LIMIT = 100


# -- what the dictionary declares -----------------------------------------------------------------

def enabled(models: ModelSet) -> bool:
    """The customer entity carries the cadence fields (a custom dictionary may leave them out)."""
    reg = models.registry
    if CUSTOMER not in models.models:
        return False
    c = reg.entity(CUSTOMER)
    return c.has_field(NEXT) and c.has_field(LAST) and c.owned


def tracks_follow_ups(models: ModelSet) -> bool:
    if not enabled(models) or FOLLOW_UP not in models.models:
        return False
    f = models.registry.entity(FOLLOW_UP)
    return f.has_field(REF) and f.field(REF).entity == CUSTOMER and f.has_field(FOLLOWED_AT)


def cadences(session: Session, models: ModelSet) -> dict[str, float]:
    """grade code → cadence in days (items without a positive ``cadence_days`` are left out)."""
    c = models.registry.entity(CUSTOMER)
    if not c.has_field(GRADE):
        return {}
    out = {}
    for code, attrs in dictionary_attrs(session, models, c.field(GRADE).dictionary).items():
        days = positive(attrs.get(CADENCE_ATTR))
        if days is not None:
            out[code] = days
    return out


def due_after(base: date | None, grade: str | None, cadence: dict[str, float]) -> date | None:
    """The next due date: ``base`` + the grade's cadence (whole days, rounded up)."""
    days = cadence.get(grade) if grade is not None else None
    if base is None or days is None:
        return None
    return base + timedelta(days=math.ceil(days))


def _created_day(created_at: datetime | None) -> date:
    return (clock.to_local(created_at) or clock.local_now()).date()


def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else None


# -- record hooks ----------------------------------------------------------------------------------

def on_customer_created(session: Session, models: ModelSet, record: Any) -> None:
    if not enabled(models):
        return
    base = _day(getattr(record, LAST, None)) or _created_day(record.created_at)
    store(session, record, {NEXT: due_after(base, getattr(record, GRADE, None), cadences(session, models))})


def on_customer_updated(session: Session, models: ModelSet, record: Any, changes: dict) -> None:
    if not enabled(models) or GRADE not in changes:
        return
    base = _day(getattr(record, LAST, None)) or _created_day(record.created_at)
    store(session, record, {NEXT: due_after(base, getattr(record, GRADE, None), cadences(session, models))})


def refresh_customers(session: Session, models: ModelSet, customer_ids: Iterable[Any]) -> None:
    """Recompute last/next follow-up of these customers from their follow-ups (one query each)."""
    ids = sorted({int(i) for i in customer_ids if i is not None})
    if not ids or not tracks_follow_ups(models):
        return
    customer, follow = models.model(CUSTOMER).__table__, models.model(FOLLOW_UP).__table__
    cadence = cadences(session, models)
    latest = select(func.max(follow.c[FOLLOWED_AT])).where(follow.c[f"{REF}_id"] == customer.c.id) \
        .scalar_subquery()
    grade = customer.c[GRADE] if GRADE in customer.c else None
    cols = [customer.c.id, customer.c.created_at, latest.label("last")] + ([grade] if grade is not None else [])
    for row in session.execute(select(*cols).where(customer.c.id.in_(ids))):
        last = row.last
        base = _day(last) or _created_day(row.created_at)
        store_row(session, models.model(CUSTOMER), row.id,
                  {LAST: last, NEXT: due_after(base, row[3] if grade is not None else None, cadence)})


def is_late(followed_at: datetime | None, created_at: datetime | None) -> bool:
    """Logged more than 24 hours after the follow-up (``created_at`` is UTC, ``followed_at`` local)."""
    if followed_at is None:
        return False
    logged = clock.to_local(created_at) if created_at is not None else clock.local_now()
    return logged - followed_at > LATE_AFTER


def on_follow_up_created(session: Session, models: ModelSet, record: Any) -> None:
    if not tracks_follow_ups(models):
        return
    if models.registry.entity(FOLLOW_UP).has_field(LATE):
        store(session, record, {LATE: is_late(getattr(record, FOLLOWED_AT), record.created_at)})
    refresh_customers(session, models, [getattr(record, f"{REF}_id")])


def on_follow_up_updated(session: Session, models: ModelSet, record: Any, changes: dict) -> None:
    if not tracks_follow_ups(models):
        return
    if FOLLOWED_AT in changes and models.registry.entity(FOLLOW_UP).has_field(LATE):
        store(session, record, {LATE: is_late(getattr(record, FOLLOWED_AT), record.created_at)})
    if FOLLOWED_AT in changes or REF in changes:
        old_customer = changes[REF][0] if REF in changes else None
        refresh_customers(session, models, [getattr(record, f"{REF}_id"), old_customer])


def on_follow_up_deleted(session: Session, models: ModelSet, record: Any) -> None:
    if tracks_follow_ups(models):
        refresh_customers(session, models, [getattr(record, f"{REF}_id")])


# -- reminders (crm remind) ----------------------------------------------------------------------

@dataclass(frozen=True)
class OwnerReminder:
    owner_id: int
    due_today: int
    overdue: int
    oldest: date | None


@dataclass
class RemindResult:
    day: date
    owners: list[OwnerReminder] = field(default_factory=list)
    created: int = 0  # notifications stored by this run (0 when the day was done already)

    @property
    def due_today(self) -> int:
        return sum(o.due_today for o in self.owners)

    @property
    def overdue(self) -> int:
        return sum(o.overdue for o in self.owners)


def reminder_query(models: ModelSet, day: date):
    """ONE set-based query: per owner, customers due on ``day`` and overdue before it."""
    t = models.model(CUSTOMER).__table__
    owner = t.c[f"{models.registry.entity(CUSTOMER).owner_field}_id"]
    nxt = t.c[NEXT]
    # Grouped by owner_id + 0, not owner_id: SQLite would otherwise walk the (owner, sort) index in
    # owner order with a row lookup per customer (1.7 s on 1,000,000) instead of the range of
    # next_follow_up_at (0.45 s with a third overdue; bench/process.py). Same plan on PostgreSQL.
    group = (owner + 0).label("owner_id")
    return (select(group,
                   func.sum(case((nxt == day, 1), else_=0)).label("due_today"),
                   func.sum(case((nxt < day, 1), else_=0)).label("overdue"),
                   func.min(nxt).label("oldest"))
            .where(nxt <= day, owner.is_not(None))
            .group_by(group).order_by(group))


def reminders(session: Session, models: ModelSet, day: date | None = None) -> list[OwnerReminder]:
    if not enabled(models):
        return []
    day = day or clock.today()
    return [OwnerReminder(r.owner_id, int(r.due_today or 0), int(r.overdue or 0), _day(r.oldest))
            for r in session.execute(reminder_query(models, day))]


def remind(session: Session, models: ModelSet, day: date | None = None, *, notify: bool = True) -> RemindResult:
    """The day's reminders per owner, stored as notifications once per owner and day. No commit."""
    day = day or clock.today()
    result = RemindResult(day, reminders(session, models, day))
    if notify:
        result.created = notifications.notify(session, models.system["notification"], [
            {"user_id": o.owner_id, "kind": notifications.FOLLOW_UP_DUE, "dedupe_key": day.isoformat(),
             "entity": CUSTOMER,
             "message": f"{day.isoformat()} 跟进提醒：今日到期 {o.due_today} 个客户，逾期 {o.overdue} 个",
             "detail": {"day": day.isoformat(), "due_today": o.due_today, "overdue": o.overdue,
                        "oldest": o.oldest.isoformat() if o.oldest else None}}
            for o in result.owners])
    return result


# -- "My follow-ups" -------------------------------------------------------------------------------

@dataclass
class Agenda:
    day: date
    overdue: list[dict] = field(default_factory=list)
    today: list[dict] = field(default_factory=list)
    upcoming: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def agenda(session: Session, models: ModelSet, policy: Any, day: date | None = None, *,
           owner_id: int | None = None, departments: Iterable[str] | None = None,
           horizon: int = UPCOMING_DAYS, limit: int = AGENDA_LIMIT) -> Agenda:
    """Customers overdue, due ``day`` and due within ``horizon`` days, within the policy's row scope,
    of ``owner_id`` (a user's own) or of ``departments`` (a manager's)."""
    day = day or clock.today()
    out = Agenda(day)
    if not enabled(models):
        return out
    model = models.model(CUSTOMER)
    entity = models.registry.entity(CUSTOMER)
    nxt = getattr(model, NEXT)
    owner = getattr(model, f"{entity.owner_field}_id")
    hidden = policy.access(CUSTOMER).hidden

    def scoped(stmt):
        stmt = policy.scope(CUSTOMER, stmt, model)
        if owner_id is not None:
            stmt = stmt.where(owner == owner_id)
        if departments is not None:
            stmt = stmt.where(model.department.in_(sorted(departments)))
        return stmt

    end = day + timedelta(days=horizon)
    bucket = case((nxt < day, "overdue"), (nxt == day, "today"), else_="upcoming")
    inner = scoped(select(bucket.label("bucket")).where(nxt <= end)).subquery()
    out.counts = {"overdue": 0, "today": 0, "upcoming": 0}
    for name, n in session.execute(select(inner.c.bucket, func.count()).group_by(inner.c.bucket)):
        out.counts[name] = n
    cols = [model.id, owner.label("owner_id"), nxt.label("next"), getattr(model, LAST).label("last")]
    for name in ("customer_no", "name", GRADE, "customer_type"):
        if entity.has_field(name) and name not in hidden:
            cols.append(getattr(model, name).label(name))
    for name, cond in (("overdue", nxt < day), ("today", nxt == day), ("upcoming", and_(nxt > day, nxt <= end))):
        if not out.counts.get(name) or limit <= 0:
            continue
        stmt = scoped(select(*cols).where(cond)).order_by(nxt, model.id).limit(limit)
        setattr(out, name, [dict(r._mapping) for r in session.execute(stmt)])
    return out


# -- follow-up tasks: the pipeline effect ``follow_up`` -------------------------------------------

def customer_id_of(models: ModelSet, entity: str, record: Any) -> int | None:
    """The customer a record belongs to: itself on ``customer``, else its ``customer`` reference."""
    if entity == CUSTOMER:
        return record.id
    e = models.registry.entity(entity)
    if not e.has_field(REF) or e.field(REF).entity != CUSTOMER:
        return None
    return getattr(record, e.field(REF).column)


def follow_up_task(session: Session, models: ModelSet, entity: str, record: Any, task: FollowUpTask, *,
                   stage: str, stage_label: Label) -> date | None:
    """Pipeline effect ``follow_up``: ``record`` entered ``stage``, so its customer is to be followed
    up within ``task.in_days`` days. The customer's ``next_follow_up_at`` becomes today + in_days
    when that is earlier than its current due date (or it has none) — ONE conditional UPDATE —, and
    the customer's owner is notified (kind ``follow_up_task``, once per record, stage and due day),
    so the customer shows in their "My follow-ups" and the notice in their list. Returns the due
    date (None: the record has no customer). In the caller's transaction; no commit."""
    customer_id = customer_id_of(models, entity, record)
    if customer_id is None or CUSTOMER not in models.models:
        return None
    due = clock.today() + timedelta(days=int(task.in_days))
    model = models.model(CUSTOMER)
    t = model.__table__
    c = models.registry.entity(CUSTOMER)
    if c.has_field(NEXT):
        moved = session.execute(update(t).where(t.c.id == customer_id, or_(t.c[NEXT].is_(None), t.c[NEXT] > due))
                                .values(unstamped(t, {NEXT: due}))).rowcount
        if moved:
            from sqlalchemy.orm.attributes import set_committed_value
            from sqlalchemy.orm.util import identity_key

            obj = session.identity_map.get(identity_key(model, customer_id))
            if obj is not None:
                set_committed_value(obj, NEXT, due)
    table = models.system.get("notification")
    if table is None or not c.owner_field:
        return due
    owner_col = t.c[f"{c.owner_field}_id"]
    name_col = t.c[c.field(c.title).column] if c.title and c.field(c.title).column else t.c.id
    row = session.execute(select(owner_col.label("owner"), name_col.label("name"))
                          .where(t.c.id == customer_id)).first()
    if row is None or row.owner is None:
        return due
    e = models.registry.entity(entity)
    title, customer = title_of(models.registry.entity(entity), record), str(row.name)
    note = task.note
    if entity == CUSTOMER:
        zh = f"客户「{customer}」进入「{stage_label.zh}」：请在 {due.isoformat()} 前跟进"
        en = f"Customer '{customer}' moved to '{stage_label.en}': follow up by {due.isoformat()}"
    else:
        zh = (f"{e.label.zh}「{title}」进入「{stage_label.zh}」：请在 {due.isoformat()} 前跟进客户「{customer}」")
        en = (f"{e.label.en} '{title}' moved to '{stage_label.en}': follow up with customer '{customer}' "
              f"by {due.isoformat()}")
    if note is not None:
        zh, en = f"{zh}（{note.zh}）", f"{en} — {note.en}"
    notifications.notify(session, table, [{
        "user_id": row.owner, "kind": notifications.FOLLOW_UP_TASK, "entity": CUSTOMER, "record_id": customer_id,
        "dedupe_key": f"{due.isoformat()}:{entity}:{record.id}:{stage}"[:80], "message": zh,
        "detail": {"zh": zh, "en": en, "due": due.isoformat(), "customer": customer_id, "entity": entity,
                   "record_id": record.id, "stage": stage}}])
    return due


# -- set-based recomputation: cadence changes, bulk loads -------------------------------------------

def grade_dictionary(models: ModelSet) -> str | None:
    """The dictionary whose items' ``cadence_days`` drive the due dates (that of ``customer.grade``)."""
    if not enabled(models) or not models.registry.entity(CUSTOMER).has_field(GRADE):
        return None
    return models.registry.entity(CUSTOMER).field(GRADE).dictionary


def _due_sql(session: Session, last, created_at, days: int):
    """SQL of ``due_after(_day(last) or _created_day(created_at), grade, …)`` for a cadence of
    ``days`` whole days: the date of ``last`` (a local wall-clock time) or else the local date of
    ``created_at`` (UTC), plus ``days``. SQLite keeps dates as ISO text, PostgreSQL as DATE."""
    offset = clock.local_offset()
    if session.get_bind().dialect.name == "postgresql":
        base = func.coalesce(cast(last, Date), cast(created_at + offset, Date))
        return base + cast(literal(int(days)), Integer)
    minutes = int(offset.total_seconds() // 60)
    base = func.coalesce(func.date(last), func.date(created_at, f"{minutes:+d} minutes"))
    return func.date(base, f"+{int(days)} days", type_=Date)


def _late_sql(session: Session, followed_at, created_at):
    """SQL of ``is_late``: logged (``created_at``, UTC) more than 24 hours after ``followed_at`` (local)."""
    offset = clock.local_offset()
    if session.get_bind().dialect.name == "postgresql":
        late = created_at + (offset - LATE_AFTER) > followed_at
    else:
        minutes = int((offset - LATE_AFTER).total_seconds() // 60)
        late = func.julianday(created_at, f"{minutes:+d} minutes") > func.julianday(followed_at)
    return func.coalesce(and_(followed_at.is_not(None), late), false())


def _expire_next(session: Session, models: ModelSet, names: tuple[str, ...] = (NEXT,)) -> None:
    """Loaded customers re-read these columns (a set-based UPDATE bypasses the identity map)."""
    identity_map = getattr(session, "identity_map", None)  # a Session or scoped_session; not a Connection
    if identity_map is not None:
        model = models.model(CUSTOMER)
        for obj in list(identity_map.values()):
            if isinstance(obj, model):
                session.expire(obj, list(names))


def recompute_cadence(session: Session, models: ModelSet, grade: str | None = None) -> int:
    """After a change of ``cadence_days``: every customer of ``grade`` (None: of every grade of the
    grade dictionary) gets ``next_follow_up_at`` = (date of its last follow-up, or the date it was
    entered) + the grade's cadence as stored now; no cadence: no due date. ONE UPDATE per grade,
    writing only rows whose date changes (versions and ``updated_at`` untouched); customers without
    a grade are left alone. Records the cadences as applied (see ``apply_cadence_changes``).
    Returns how many customers' due dates changed. No commit."""
    dictionary = grade_dictionary(models)
    if dictionary is None:
        return 0
    t = models.model(CUSTOMER).__table__
    cadence = cadences(session, models)
    grades = [grade] if grade is not None else sorted(dictionary_attrs(session, models, dictionary))
    changed = 0
    for code in grades:
        if code in cadence:
            due = _due_sql(session, t.c[LAST], t.c.created_at, math.ceil(cadence[code]))
            stmt = update(t).where(t.c[GRADE] == code, t.c[NEXT].is_distinct_from(due)) \
                .values(unstamped(t, {NEXT: due}))
        else:
            stmt = update(t).where(t.c[GRADE] == code, t.c[NEXT].is_not(None)).values(unstamped(t, {NEXT: None}))
        changed += session.execute(stmt).rowcount or 0
    applied = _applied_cadences(session, models)
    applied = dict(cadence) if applied is None else applied  # nothing recorded yet: the rest counts as applied
    for code in grades:
        applied.pop(code, None)
        if code in cadence:
            applied[code] = cadence[code]
    _store_applied(session, models, applied if grade is not None else cadence)
    if changed:
        _expire_next(session, models)
    return changed


def _applied_cadences(session: Session, models: ModelSet) -> dict[str, float] | None:
    state = models.system["state"]
    raw = session.execute(select(state.c.value).where(state.c.key == CADENCE_STATE)).scalar()
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else None


def _store_applied(session: Session, models: ModelSet, cadence: dict[str, float]) -> None:
    state = models.system["state"]
    value = json.dumps(dict(sorted(cadence.items())))
    if not session.execute(state.update().where(state.c.key == CADENCE_STATE).values(value=value)).rowcount:
        insert = notifications.dialect_insert(session, state).on_conflict_do_nothing(index_elements=["key"])
        session.execute(insert.values(key=CADENCE_STATE, value=value))


def _declared_cadences(models: ModelSet) -> dict[str, float]:
    """grade code → ``cadence_days`` as the dictionary files declare them (before admin edits)."""
    dictionary = grade_dictionary(models)
    if dictionary is None or not models.registry.has_dictionary(dictionary):
        return {}
    declared = {i.code: positive(i.attrs.get(CADENCE_ATTR)) for i in models.registry.dictionary(dictionary).items}
    return {code: days for code, days in declared.items() if days is not None}


def apply_cadence_changes(session: Session, models: ModelSet) -> tuple[list[str], int]:
    """Recompute the due dates of the grades whose cadence differs from the one last applied (as
    recorded in ``crm_schema_state``; before anything was recorded: as the dictionary files declare
    it). ``crm remind`` and the reminder job run it first, so that a cadence changed in any way (the
    data-dictionary screen, the YAML sync at start-up, SQL) counts before the day's reminders; the
    data-dictionary service may run it after each change. Two small SELECTs when nothing changed.
    Returns (grades recomputed, customers whose due date changed). No commit."""
    if grade_dictionary(models) is None:
        return [], 0
    recorded = _applied_cadences(session, models)
    applied = _declared_cadences(models) if recorded is None else recorded
    current = cadences(session, models)
    grades = sorted(g for g in set(applied) | set(current) if applied.get(g) != current.get(g))
    if not grades:
        if recorded is None:
            _store_applied(session, models, current)
        return [], 0
    return grades, sum(recompute_cadence(session, models, g) for g in grades)


def backfill(session: Session, models: ModelSet) -> dict[str, int]:
    """Recompute every customer's last/next follow-up and every follow-up's late flag from the
    stored rows (after data was loaded or back-dated without the record hooks, e.g. demo data).
    Set-based, on SQLite and PostgreSQL alike: one UPDATE of the follow-ups, then one UPDATE of the
    customers per grade with a cadence and one for the rest; only rows whose values change are
    written. Returns how many rows changed. No commit."""
    out = {"customers": 0, "follow_ups": 0}
    if not enabled(models):
        return out
    customer = models.model(CUSTOMER).__table__
    last = null()
    if tracks_follow_ups(models):
        follow = models.model(FOLLOW_UP).__table__
        if models.registry.entity(FOLLOW_UP).has_field(LATE):
            late = _late_sql(session, follow.c[FOLLOWED_AT], follow.c.created_at)
            out["follow_ups"] = session.execute(update(follow).where(follow.c[LATE].is_distinct_from(late))
                                                .values(unstamped(follow, {LATE: late}))).rowcount or 0
        last = select(func.max(follow.c[FOLLOWED_AT])).where(follow.c[f"{REF}_id"] == customer.c.id) \
            .scalar_subquery()
    cadence = cadences(session, models) if GRADE in customer.c else {}
    differs = lambda due: or_(customer.c[LAST].is_distinct_from(last), customer.c[NEXT].is_distinct_from(due))  # noqa: E731
    for code in sorted(cadence):
        due = _due_sql(session, last, customer.c.created_at, math.ceil(cadence[code]))
        out["customers"] += session.execute(update(customer).where(customer.c[GRADE] == code, differs(due))
                                            .values(unstamped(customer, {LAST: last, NEXT: due}))).rowcount or 0
    rest = update(customer).where(differs(null()))
    if cadence:
        rest = rest.where(or_(customer.c[GRADE].is_(None), customer.c[GRADE].not_in(sorted(cadence))))
    out["customers"] += session.execute(rest.values(unstamped(customer, {LAST: last, NEXT: None}))).rowcount or 0
    if GRADE in customer.c:
        _store_applied(session, models, cadence)
    _expire_next(session, models, (NEXT, LAST))
    return out
