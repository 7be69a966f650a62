"""Notifications (``crm_notification``): what the system tells one user — follow-up reminders and
tasks, SLA escalations, moves of their records — listed on /crm/notifications/ until read.

A notice is idempotent per (user, kind, ``dedupe_key``): writers insert with ON CONFLICT DO NOTHING,
so running ``crm remind`` twice on the same day or scanning a breached ticket again adds nothing.
Framework-free (SQLAlchemy only); the screen is crm_meta/web/process_views.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from crm_meta.services import clock

FOLLOW_UP_DUE = "follow_up_due"
SLA_BREACH = "sla_breach"
FOLLOW_UP_TASK = "follow_up_task"  # pipeline effect ``follow_up``: detail has zh, en, due, customer
TRANSITION = "transition"  # pipeline effect ``notify_owner``
LIST_LIMIT = 200


def dialect_insert(session: Session, table: Table):
    """An INSERT with ``on_conflict_do_*`` for the session's database (SQLite or PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def insert_ignoring_duplicates(session: Session, table: Table):
    """``INSERT … ON CONFLICT DO NOTHING`` for the session's database (SQLite or PostgreSQL)."""
    return dialect_insert(session, table).on_conflict_do_nothing(index_elements=["user_id", "kind", "dedupe_key"])


def notify(session: Session, table: Table, rows: Iterable[dict[str, Any]]) -> int:
    """Store notices (dicts with user_id, kind, dedupe_key, message and optionally entity, record_id,
    detail); those already stored for the same user, kind and key are skipped. Returns how many
    were new. No commit."""
    rows = list(rows)
    if not rows:
        return 0
    keys = {(r["kind"], r["dedupe_key"]) for r in rows}
    users = {r["user_id"] for r in rows}
    have = set()
    if len(keys) == 1:  # the common case (one reminder day, one scan): one lookup
        kind, key = next(iter(keys))
        have = {(u, kind, key) for u in session.execute(
            select(table.c.user_id).where(table.c.kind == kind, table.c.dedupe_key == key,
                                          table.c.user_id.in_(users))).scalars()}
    now = clock.now()
    new = [{"entity": None, "record_id": None, "detail": None, "created_at": now, **r} for r in rows
           if (r["user_id"], r["kind"], r["dedupe_key"]) not in have]
    if new:
        session.execute(insert_ignoring_duplicates(session, table), new)
    return len(new)


@dataclass(frozen=True)
class Notice:
    id: int
    kind: str
    entity: str | None
    record_id: int | None
    text: str
    created_at: datetime
    read_at: datetime | None


def describe(kind: str, message: str, detail: Any, lang: str) -> str:
    """A notice in the reader's language (the stored message is the Chinese one)."""
    d = detail if isinstance(detail, dict) else {}
    en = lang.startswith("en")
    if kind == FOLLOW_UP_DUE and "due_today" in d:
        today, overdue = d.get("due_today", 0), d.get("overdue", 0)
        if en:
            return f"Follow-ups for {d.get('day', '')}: {today} customer(s) due today, {overdue} overdue"
        return f"{d.get('day', '')} 跟进提醒：今日到期 {today} 个客户，逾期 {overdue} 个"
    if kind == SLA_BREACH and d.get("no"):
        if en:
            return f"Ticket {d['no']} breached its SLA (priority {d.get('priority') or '-'}) — escalated to you"
        return f"工单 {d['no']} 已超过处理时限（{d.get('priority') or '-'}），已升级给您"
    if isinstance(d.get("en" if en else "zh"), str):  # notices written in both languages
        return d["en" if en else "zh"]
    return message


def unread_count(session: Session, table: Table, user_id: int | None) -> int:
    if user_id is None:
        return 0
    return session.execute(select(func.count()).select_from(table).where(
        table.c.user_id == user_id, table.c.read_at.is_(None))).scalar_one()


def for_user(session: Session, table: Table, user_id: int | None, lang: str, *, unread_only: bool = False,
             limit: int = LIST_LIMIT) -> list[Notice]:
    """The user's latest notices, unread first, newest first."""
    if user_id is None:
        return []
    stmt = select(table).where(table.c.user_id == user_id)
    if unread_only:
        stmt = stmt.where(table.c.read_at.is_(None))
    stmt = stmt.order_by(table.c.read_at.is_not(None), table.c.id.desc()).limit(limit)
    return [Notice(r.id, r.kind, r.entity, r.record_id, describe(r.kind, r.message, r.detail, lang), r.created_at,
                   r.read_at) for r in session.execute(stmt)]


def page_for_user(session: Session, table: Table, user_id: int | None, lang: str, *, unread_only: bool = False,
                  page: int = 0, page_size: int = 20) -> tuple[int, list[Notice]]:
    """One page of the user's notices, newest first, and how many there are in all (REST)."""
    if user_id is None:
        return 0, []
    where = [table.c.user_id == user_id] + ([table.c.read_at.is_(None)] if unread_only else [])
    total = session.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
    stmt = select(table).where(*where).order_by(table.c.id.desc()).offset(page * page_size).limit(page_size)
    return total, [Notice(r.id, r.kind, r.entity, r.record_id, describe(r.kind, r.message, r.detail, lang),
                          r.created_at, r.read_at) for r in session.execute(stmt)]


def mark_read(session: Session, table: Table, user_id: int | None, ids: Iterable[int] | None = None) -> int:
    """Mark the user's notices (``ids``, or all of them) as read; someone else's ids are ignored."""
    if user_id is None:
        return 0
    stmt = update(table).where(table.c.user_id == user_id, table.c.read_at.is_(None))
    if ids is not None:
        ids = [int(i) for i in ids]
        if not ids:
            return 0
        stmt = stmt.where(table.c.id.in_(ids))
    return session.execute(stmt.values(read_at=clock.now())).rowcount or 0
