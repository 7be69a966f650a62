"""The audit trail: who did what, when, from where — one row per field change or event, append-only.

Writers (``record_change``, ``log_event``) only add rows with ``session.execute(insert)`` in the
caller's transaction: a change and its audit rows are committed or rolled back together. Nothing in
the application updates or deletes a row of ``crm_audit``, and ``install_append_only`` puts a
trigger on the table (SQLite and PostgreSQL) that refuses UPDATE and DELETE (and TRUNCATE) from
anyone, admins and scripts included.

Values are stored as text, unmasked (dates ISO, lists joined with ",", decimals plain): the audit
store is the one place the raw values of sensitive fields are kept. Readers (``history``,
``search``) return plain dicts and mask values for viewers who may not reveal them.

Framework-free: SQLAlchemy and the metadata only (the web layer is crm_meta/web/audit_views.py).
"""
from __future__ import annotations

import json
import logging
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from crm_meta.services.masking import mask

log = logging.getLogger("crm_meta.audit")

# The actions the CRM records (plugins may record others with log_event).
ACTIONS = ("create", "update", "delete", "reveal", "export", "import", "login", "login_failed",
           "login_locked", "denied", "approval", "assign", "reassign", "dictionary", "schema_change")
COUNT_CAP = 10_000
MAX_TEXT = 10_000  # an audit value longer than this is cut (with a marker)

MaskOf = Callable[[str, str], "str | None"]  # (entity, field) → mask kind to apply, None: show raw


def utcnow() -> datetime:
    """When an entry happens: the clock's time (naive UTC; frozen in tests and for the demo's past)."""
    from crm_meta.services import clock

    return clock.now()


# -- values ---------------------------------------------------------------------------------------

def as_text(value: Any) -> str | None:
    """A stored value as the audit keeps it: None stays None, everything else plain text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, (date, time)):
        text = value.isoformat()
    elif isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = [as_text(v) or "" for v in value]
        text = ",".join(sorted(items) if isinstance(value, (set, frozenset)) else items)
    elif isinstance(value, Mapping):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    elif hasattr(value, "id") and not isinstance(value, (str, int, float)):
        text = str(value.id)  # a related row: its id
    else:
        text = str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def _entity_name(entity: Any) -> str | None:
    if entity is None or isinstance(entity, str):
        return entity
    return getattr(entity, "name", str(entity))


def _who(actor: Any) -> dict[str, Any]:
    username = getattr(actor, "username", None)
    return {
        "user_id": getattr(actor, "user_id", None),
        "username": username[:256] if username else username,
        "ip": (getattr(actor, "ip", None) or None) and str(actor.ip)[:64],
        "request_id": (getattr(actor, "request_id", None) or None) and str(actor.request_id)[:64],
    }


# -- writers --------------------------------------------------------------------------------------

def record_change(session: Session | Connection, system_tables: Mapping[str, Table], actor: Any, action: str,
                  entity: Any, record_id: Any, changes: Mapping[str, tuple[Any, Any]] | None) -> int:
    """Record a create / update / delete of one record: one row per changed field (field, old, new).

    ``changes`` is ``{field: (old, new)}`` (for a create: ``(None, value)`` for each initial value;
    pairs that are both empty are skipped). Without changes (a delete) one row is written. Only
    inserts, in the caller's transaction; returns the number of rows.
    """
    base = {"at": utcnow(), **_who(actor), "action": action, "entity": _entity_name(entity),
            "record_id": int(record_id) if record_id is not None else None, "quantity": 1}
    rows = []
    for name, pair in (changes or {}).items():
        old, new = pair
        old_t, new_t = as_text(old), as_text(new)
        if old_t in (None, "") and new_t in (None, ""):
            continue
        rows.append({**base, "field": name, "old_value": old_t, "new_value": new_t, "detail": None})
    if not rows:
        if action == "update":
            return 0  # nothing changed
        rows.append({**base, "field": None, "old_value": None, "new_value": None, "detail": None})
    session.execute(system_tables["audit"].insert(), rows)
    return len(rows)


def log_event(session: Session | Connection, system_tables: Mapping[str, Table], actor: Any, action: str, *,
              entity: Any = None, record_id: Any = None, field: str | None = None,
              detail: Mapping[str, Any] | None = None, count: int = 1,
              old_value: Any = None, new_value: Any = None, alerts: bool = True) -> None:
    """Record one event (reveal, export, import, login, login_failed, denied, approval …).

    ``count`` is how many things the event covers (records exported, values revealed); alert rules
    add these up. After the insert, the alert rules that watch ``action`` are evaluated in the same
    transaction (``alerts=False`` skips that). Only inserts; the caller commits.
    """
    at = utcnow()
    row = {"at": at, **_who(actor), "action": action, "entity": _entity_name(entity),
           "record_id": int(record_id) if record_id is not None else None, "field": field,
           "old_value": as_text(old_value), "new_value": as_text(new_value),
           "quantity": max(int(count or 0), 0), "detail": _json_safe(detail) if detail else None}
    session.execute(system_tables["audit"].insert().values(**row))
    if alerts:
        from crm_meta.services import alerts as alert_rules

        try:
            alert_rules.evaluate(session, system_tables, action, row, now=at)
        except Exception:  # noqa: BLE001 - a broken rule must never lose the event or the change
            log.exception("evaluating alert rules for %s failed", action)


def _json_safe(detail: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(detail), ensure_ascii=False, default=str))


# -- readers --------------------------------------------------------------------------------------

def masker(registry: Any, can_reveal: Callable[[str], bool] | None = None,
           hidden: Callable[[str], Iterable[str]] | None = None,
           masked: Callable[[str], Mapping[str, str]] | None = None) -> MaskOf:
    """``mask_of(entity, field)`` for a viewer: the field's mask kind unless they may reveal the entity.

    ``can_reveal(entity)`` (default: nobody) decides per entity; sensitive fields are those declared
    with ``mask`` (plus ``masked(entity)`` → {field: kind} when given, e.g. a role's masked fields);
    fields in ``hidden(entity)`` are always shown as ****. Unknown entities and fields: raw.
    """
    reveal_cache: dict[str, bool] = {}
    field_cache: dict[str, tuple[Mapping[str, str], frozenset[str]]] = {}

    def fields_of(entity: str) -> tuple[Mapping[str, str], frozenset[str]]:
        if entity not in field_cache:
            kinds: dict[str, str] = {}
            hide: frozenset[str] = frozenset()
            try:
                ent = registry.entity(entity) if registry is not None else None
            except KeyError:
                ent = None
            if ent is not None:  # an entity no longer declared: its entries are shown as stored
                kinds = {f.name: f.mask for f in ent.fields if getattr(f, "mask", None)}
                if masked is not None:
                    kinds.update(masked(entity) or {})
                if hidden is not None:
                    hide = frozenset(hidden(entity) or ())
            field_cache[entity] = (kinds, hide)
        return field_cache[entity]

    def mask_of(entity: str | None, field: str | None) -> str | None:
        if not entity or not field:
            return None
        kinds, hide = fields_of(entity)
        if field in hide:
            return "all"
        kind = kinds.get(field)
        if kind is None:
            return None
        if entity not in reveal_cache:
            reveal_cache[entity] = bool(can_reveal(entity)) if can_reveal is not None else False
        return None if reveal_cache[entity] else kind

    return mask_of


def _row(r: Mapping[str, Any], mask_of: MaskOf | None) -> dict[str, Any]:
    kind = mask_of(r["entity"], r["field"]) if mask_of is not None else None
    old, new = r["old_value"], r["new_value"]
    if kind:
        old, new = mask(kind, old), mask(kind, new)
    return {
        "id": r["id"], "at": r["at"].isoformat(sep=" ", timespec="seconds") if r["at"] else None,
        "user_id": r["user_id"], "username": r["username"], "ip": r["ip"], "request_id": r["request_id"],
        "action": r["action"], "entity": r["entity"], "record_id": r["record_id"], "field": r["field"],
        "old_value": old, "new_value": new, "masked": bool(kind), "count": r["quantity"],
        "detail": r["detail"] or None,
    }


def _mask_of(mask_of: MaskOf | None, registry: Any, can_reveal: Callable[[str], bool] | None) -> MaskOf | None:
    if mask_of is not None:
        return mask_of
    if registry is not None:
        return masker(registry, can_reveal)
    return None


def history(session: Session | Connection, system_tables: Mapping[str, Table], entity_name: str, record_id: Any,
            *, limit: int = 200, registry: Any = None, can_reveal: Callable[[str], bool] | None = None,
            mask_of: MaskOf | None = None) -> list[dict[str, Any]]:
    """A record's entries, newest first (at most ``limit``), values masked for the viewer.

    Give ``registry`` and ``can_reveal`` (entity → bool), or a ready ``mask_of``; without either the
    values come back raw (for trusted callers only).
    """
    t = system_tables["audit"]
    stmt = (select(t).where(t.c.entity == entity_name, t.c.record_id == int(record_id))
            .order_by(t.c.id.desc()).limit(max(1, min(int(limit), 1000))))
    mo = _mask_of(mask_of, registry, can_reveal)
    return [_row(r, mo) for r in session.execute(stmt).mappings()]


def _day(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value).strip()[:10])


def search(session: Session | Connection, system_tables: Mapping[str, Table], *, user: str | None = None,
           user_id: int | None = None, action: str | None = None, entity: str | None = None,
           record_id: Any = None, date_from: Any = None, date_to: Any = None, page: int = 1,
           page_size: int = 50, registry: Any = None, can_reveal: Callable[[str], bool] | None = None,
           mask_of: MaskOf | None = None) -> dict[str, Any]:
    """Entries matching every given filter, newest first, a page at a time.

    ``user`` is a username (an account that signed in, or a name someone tried to sign in with);
    ``date_from`` / ``date_to`` are days (UTC, both included). Returns ``{"rows", "count", "capped",
    "page", "page_size"}``; the count stops at 10,000 like the lists do. Raises ValueError on a bad
    date or record id.
    """
    t = system_tables["audit"]
    stmt = select(t)
    if user_id is not None:
        stmt = stmt.where(t.c.user_id == int(user_id))
    if user:
        stmt = stmt.where(t.c.username == user.strip())
    if action:
        stmt = stmt.where(t.c.action == action)
    if entity:
        stmt = stmt.where(t.c.entity == entity)
    if record_id not in (None, ""):
        stmt = stmt.where(t.c.record_id == int(record_id))
    start, end = _day(date_from), _day(date_to)
    if start is not None:
        stmt = stmt.where(t.c.at >= datetime.combine(start, time.min))
    if end is not None:
        stmt = stmt.where(t.c.at < datetime.combine(end + timedelta(days=1), time.min))
    page = max(1, int(page or 1))
    page_size = max(1, min(int(page_size or 50), 500))
    inner = stmt.with_only_columns(t.c.id).limit(COUNT_CAP + 1).subquery()
    count = session.execute(select(func.count()).select_from(inner)).scalar_one()
    rows = session.execute(stmt.order_by(t.c.id.desc()).offset((page - 1) * page_size).limit(page_size)).mappings()
    mo = _mask_of(mask_of, registry, can_reveal)
    return {"rows": [_row(r, mo) for r in rows], "count": min(count, COUNT_CAP), "capped": count > COUNT_CAP,
            "page": page, "page_size": page_size}


# -- append-only ------------------------------------------------------------------------------------

SQLITE_TRIGGERS = {
    "crm_audit_no_update": "CREATE TRIGGER IF NOT EXISTS crm_audit_no_update BEFORE UPDATE ON crm_audit "
                           "BEGIN SELECT RAISE(ABORT, 'crm_audit is append-only: UPDATE refused'); END",
    "crm_audit_no_delete": "CREATE TRIGGER IF NOT EXISTS crm_audit_no_delete BEFORE DELETE ON crm_audit "
                           "BEGIN SELECT RAISE(ABORT, 'crm_audit is append-only: DELETE refused'); END",
}
PG_FUNCTION = """
CREATE OR REPLACE FUNCTION crm_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'crm_audit is append-only: %% refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$"""
PG_TRIGGERS = {
    "crm_audit_append_only": "CREATE TRIGGER crm_audit_append_only BEFORE UPDATE OR DELETE ON crm_audit "
                             "FOR EACH ROW EXECUTE FUNCTION crm_audit_append_only()",
    "crm_audit_no_truncate": "CREATE TRIGGER crm_audit_no_truncate BEFORE TRUNCATE ON crm_audit "
                             "FOR EACH STATEMENT EXECUTE FUNCTION crm_audit_append_only()",
}


def _installed(conn: Connection) -> set[str]:
    if conn.dialect.name == "sqlite":
        return set(conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'crm_audit'").scalars())
    return set(conn.exec_driver_sql(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass('crm_audit') AND NOT tgisinternal").scalars())


def install_append_only(engine: Engine) -> bool:
    """Create the triggers that refuse UPDATE/DELETE on crm_audit unless present; True when created.

    Cheap when they exist (one catalogue query), so it runs at every start (a table rebuilt by a
    migration loses its triggers; this puts them back). Several workers starting at once: the
    PostgreSQL variant runs under an advisory lock, SQLite's under its write lock.
    """
    wanted = SQLITE_TRIGGERS if engine.dialect.name == "sqlite" else PG_TRIGGERS
    with engine.connect() as conn:
        if set(wanted) <= _installed(conn):
            return False
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            for sql in SQLITE_TRIGGERS.values():
                conn.exec_driver_sql(sql)
        else:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7262011)")
            missing = set(PG_TRIGGERS) - _installed(conn)
            if missing:
                conn.exec_driver_sql(PG_FUNCTION)
                for name in sorted(missing):
                    conn.exec_driver_sql(PG_TRIGGERS[name])
        conn.commit()
    return True
