"""Alert rules: abnormal behaviour seen in the audit trail raises an alert admins must look at.

Rules are items of the ``alert_rule`` dictionary (schemas/alerts.yaml), read at run time, so admins
change thresholds or add rules without code. Each item's ``attrs``:

``event``           the audit action it watches (``export``, ``reveal``, ``login_failed`` …);
``more_than`` / ``at_least``   the threshold: alert when the total in the window is > / ≥ it;
``window_minutes``  the sliding window;
``per``             ``user`` (the acting user) or ``account`` (the username given — for sign-ins).

The total adds up the events' ``quantity`` (records exported, values revealed; 1 per sign-in).
After each ``audit.log_event`` of a watched event the total for its subject is computed; above the
threshold an alert row is added to ``crm_alert`` unless an open alert of the same rule and subject
is already within the window (then that one's count and last time are brought up to date). After an
alert was acknowledged, only events after it count towards the next one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from crm_meta.metadata.model import Label

log = logging.getLogger("crm_meta.alerts")

DICTIONARY = "alert_rule"
OPEN, ACKNOWLEDGED = "open", "acknowledged"


@dataclass(frozen=True)
class Rule:
    code: str
    label: Label
    event: str
    threshold: int  # alert when total >= threshold
    window_minutes: int
    per: str  # "user" or "account"

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.window_minutes)

    def describe(self, lang: str) -> str:
        en = lang.startswith("en")
        who = ("per account" if en else "同一账号") if self.per == "account" else ("per user" if en else "同一用户")
        if en:
            return f"{self.event} ≥ {self.threshold} within {self.window_minutes} min, {who}"
        return f"{who} {self.window_minutes} 分钟内 {self.event} ≥ {self.threshold}"


def rule_from_item(code: str, label: Label, attrs: Mapping[str, Any]) -> Rule:
    """A rule from a dictionary item's attrs; ValueError naming what is wrong."""
    event = str(attrs.get("event") or "").strip()
    if not event:
        raise ValueError("attrs.event is missing")
    if attrs.get("more_than") not in (None, ""):
        threshold = int(attrs["more_than"]) + 1
    elif attrs.get("at_least") not in (None, ""):
        threshold = int(attrs["at_least"])
    else:
        raise ValueError("attrs.more_than or attrs.at_least is missing")
    window = int(attrs.get("window_minutes") or 60)
    per = str(attrs.get("per") or "user")
    if threshold < 1 or window < 1 or per not in ("user", "account"):
        raise ValueError("threshold and window_minutes must be positive, per 'user' or 'account'")
    return Rule(code, label, event, threshold, window, per)


def load_rules(session: Session | Connection, dict_item: Table) -> list[Rule]:
    """The active rules, straight from crm_dict_item (one small query); broken items are skipped."""
    rows = session.execute(select(dict_item).where(dict_item.c.dictionary == DICTIONARY,
                                                   dict_item.c.active.is_(True))
                           .order_by(dict_item.c.sort_order, dict_item.c.code)).mappings()
    rules = []
    for r in rows:
        try:
            rules.append(rule_from_item(r["code"], Label(r["label_zh"], r["label_en"]), dict(r["attrs"] or {})))
        except (TypeError, ValueError) as exc:
            log.warning("alert rule %s ignored: %s", r["code"], exc)
    return rules


def _subject(rule: Rule, event: Mapping[str, Any]) -> tuple[str | None, Any]:
    """(subject text, WHERE clause on crm_audit) of an event for a rule; (None, None) without one."""
    if rule.per == "user" and event.get("user_id") is not None:
        return event.get("username") or f"#{event['user_id']}", ("user_id", event["user_id"])
    if event.get("username"):
        return event["username"], ("username", event["username"])
    return None, None


def evaluate(session: Session | Connection, system_tables: Mapping[str, Table], action: str,
             event: Mapping[str, Any], *, now: datetime | None = None) -> list[int]:
    """Check the rules watching ``action`` after ``event`` (a crm_audit row as inserted).

    Returns the ids of alerts raised (new rows); only inserts/updates crm_alert, in the caller's
    transaction.
    """
    rules = [r for r in load_rules(session, system_tables["dict_item"]) if r.event == action]
    if not rules:
        return []
    audit, alert = system_tables["audit"], system_tables["alert"]
    now = now or event.get("at") or datetime.utcnow()
    raised = []
    for rule in rules:
        subject, where = _subject(rule, event)
        if subject is None:
            continue
        column, value = where
        since = now - rule.window
        previous = session.execute(
            select(alert.c.id, alert.c.status, alert.c.last_at)
            .where(alert.c.rule == rule.code, alert.c.subject == subject[:256], alert.c.last_at >= since)
            .order_by(alert.c.id.desc()).limit(1)).first()
        in_window = audit.c.at >= since
        if previous is not None and previous.status != OPEN:
            in_window = audit.c.at > max(since, previous.last_at)  # acknowledged: a fresh burst is needed
        total, first_at, last_at = session.execute(
            select(func.coalesce(func.sum(audit.c.quantity), 0), func.min(audit.c.at), func.max(audit.c.at))
            .where(audit.c.action == rule.event, in_window, audit.c[column] == value)).one()
        total = int(total or 0)
        if total < rule.threshold:
            continue
        if previous is not None and previous.status == OPEN:
            session.execute(alert.update().where(alert.c.id == previous.id)
                            .values(hits=total, last_at=last_at or now))
            continue
        result = session.execute(alert.insert().values(
            rule=rule.code, subject=subject[:256], user_id=event.get("user_id") if rule.per == "user" else None,
            hits=total, threshold=rule.threshold, window_minutes=rule.window_minutes,
            first_at=first_at or now, last_at=last_at or now, created_at=now, status=OPEN))
        new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        log.warning("alert %s raised for %s: %s in %s min", rule.code, subject, total, rule.window_minutes)
        raised.append(new_id)
    return raised


# -- reading and acknowledging --------------------------------------------------------------------

def open_count(session: Session | Connection, alert: Table) -> int:
    return session.execute(select(func.count()).select_from(alert).where(alert.c.status == OPEN)).scalar_one()


def latest(session: Session | Connection, alert: Table, *, status: str | None = None, limit: int = 5,
           offset: int = 0) -> list[dict[str, Any]]:
    stmt = select(alert)
    if status:
        stmt = stmt.where(alert.c.status == status)
    rows = session.execute(stmt.order_by(alert.c.id.desc()).offset(offset).limit(limit)).mappings()
    return [dict(r) for r in rows]


def count(session: Session | Connection, alert: Table, *, status: str | None = None) -> int:
    stmt = select(func.count()).select_from(alert)
    if status:
        stmt = stmt.where(alert.c.status == status)
    return session.execute(stmt).scalar_one()


def acknowledge(session: Session | Connection, alert: Table, alert_id: int, actor: Any,
                now: datetime | None = None) -> bool:
    """Mark an open alert acknowledged by ``actor``; False when there is no such open alert."""
    from crm_meta.db.tables import utcnow

    result = session.execute(
        alert.update().where(alert.c.id == int(alert_id), alert.c.status == OPEN)
        .values(status=ACKNOWLEDGED, acknowledged_by_id=getattr(actor, "user_id", None),
                acknowledged_by=getattr(actor, "username", None), acknowledged_at=now or utcnow()))
    return (result.rowcount or 0) > 0
