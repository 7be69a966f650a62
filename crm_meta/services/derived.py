"""Writing values the system derives (next follow-up due, SLA clocks) without touching versions.

Derived read-only columns are written with a plain UPDATE of the row, like the lifecycle plugin's
scores: ``version``, ``updated_at`` and ``updated_by`` stay as they are, so a derived value never
makes a user's open form stale, and a record created through the records service keeps version 1.
The mapped object in the session (if loaded) is given the same values as *committed* state, so
what the caller reads or returns after the save is current without another flush.
"""
from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from crm_meta.db.tables import ModelSet


def unstamped(table, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` plus ``updated_at`` set to itself: the column's ``onupdate`` stamp must not fire
    for a value the system derives."""
    out = dict(values)
    if "updated_at" in table.c and "updated_at" not in out:
        out["updated_at"] = table.c.updated_at
    return out


def store(session: Session, record: Any, values: Mapping[str, Any]) -> None:
    """Write ``values`` (column → value) to ``record``'s row and to the object itself."""
    if not values:
        return
    table = type(record).__table__
    session.execute(table.update().where(table.c.id == record.id).values(**unstamped(table, values)))
    _refresh(session, record, values)


def _refresh(session: Session, obj: Any, values: Mapping[str, Any]) -> None:
    """The object shows what was written; an attribute computed when read (``build_models(computed=)``)
    is expired instead, so that its next read asks the database."""
    props = type(obj).__mapper__.attrs
    computed = []
    for key, value in values.items():
        prop = props.get(key)
        if prop is not None and getattr(prop, "columns", None) and prop.columns[0] is type(obj).__table__.c.get(key):
            set_committed_value(obj, key, value)
        elif prop is not None:
            computed.append(key)
    if computed:
        session.expire(obj, computed)


def store_row(session: Session, model: type, record_id: int, values: Mapping[str, Any]) -> None:
    """Like ``store`` for a row given by id; the object is updated too when the session holds it."""
    if not values:
        return
    table = model.__table__
    session.execute(table.update().where(table.c.id == record_id).values(**unstamped(table, values)))
    obj = session.identity_map.get(identity_key(model, record_id))
    if obj is not None:
        _refresh(session, obj, values)


def dictionary_attrs(session: Session, models: ModelSet, dictionary: str | None) -> dict[str, dict]:
    """code → attrs of a dictionary's items as stored (admin edits included; inactive items too,
    since existing records may still carry their codes)."""
    if not dictionary:
        return {}
    t = models.system["dict_item"]
    return {code: dict(attrs or {}) for code, attrs in session.execute(
        select(t.c.code, t.c.attrs).where(t.c.dictionary == dictionary))}


def positive(value: Any) -> float | None:
    """A positive number from an attrs value (None for anything else: bool, text, 0, negatives)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value > 0 and value == value and value != float("inf") else None
