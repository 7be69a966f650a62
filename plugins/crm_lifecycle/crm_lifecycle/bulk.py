"""Writing straight into the CRM's tables, in bulk — the plugin's only writes.

Why not ``RecordService``: the fields written here are read-only for users (the service refuses
them on every path), and scoring 100,000 customers one ``RecordService.update`` at a time (a
SELECT, validation, hooks and a versioned UPDATE each) would take minutes; one ``executemany``
UPDATE per batch of 5,000 takes about a second for all of them. See :func:`write_scores`.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Sequence

import numpy as np
from sqlalchemy import Boolean, Date, DateTime, Integer, Numeric, bindparam

from crm_meta.db.tables import utcnow
from crm_meta.services import numbering

__all__ = ["fill_required", "write_scores", "insert_run", "SCORE_FIELDS"]

UPDATE_BATCH = 5_000
SCORE_FIELDS = ("churn_risk", "lifecycle_stage", "predicted_value", "risk_explanation", "scored_at")


def fill_required(table, entity, registry, user_id: int | None, given: set[str]) -> dict[str, Any]:
    """Plain values for the NOT NULL columns without a default that ``given`` does not cover (a
    required field or system column the data dictionary gained since this code was written)."""
    by_column = {f.column: f for f in entity.fields if f.column}
    out: dict[str, Any] = {}
    for col in table.columns:
        if col.name in given or col.primary_key or col.nullable or col.default is not None \
                or col.server_default is not None:
            continue
        f = by_column.get(col.name)
        if f is not None and f.dictionary and registry.has_dictionary(f.dictionary):
            items = registry.dictionary(f.dictionary).items
            out[col.name] = f.default if isinstance(f.default, str) else (items[0].code if items else "")
        elif f is not None and f.storage == "fk_user":
            out[col.name] = user_id
        elif isinstance(col.type, Boolean):
            out[col.name] = False
        elif isinstance(col.type, (Integer, Numeric)):
            out[col.name] = 0
        elif isinstance(col.type, DateTime):
            out[col.name] = datetime(2000, 1, 1)
        elif isinstance(col.type, Date):
            out[col.name] = date(2000, 1, 1)
        else:
            out[col.name] = "1"
    return out


def write_scores(session, models, ids: np.ndarray, risk: np.ndarray, stage: Sequence[str], value: np.ndarray,
                 explanation: Sequence[str], scored_at: datetime, progress=None) -> int:
    """Store the scores of ``ids`` with ``executemany`` UPDATEs (batches of ``UPDATE_BATCH``).

    Deliberately a plain UPDATE of the five read-only score columns, not ``RecordService.update``:
    fast enough for 100,000 customers (see the module docstring), and it leaves ``version``,
    ``updated_at`` and ``updated_by`` alone — the score is derived data, so a user who has the
    customer open while the nightly job runs can still save (no optimistic-locking conflict), and
    "last changed by" keeps naming the last person who changed the customer.
    """
    table = models.model("customer").__table__
    stmt = (table.update().where(table.c.id == bindparam("_id"))
            .values(**{name: bindparam(f"_{name}") for name in SCORE_FIELDS}))
    n = len(ids)
    risk = np.round(np.clip(risk, 0.0, 1.0), 4)
    value = np.round(np.clip(np.nan_to_num(value), 0.0, 1e15), 2)
    for start in range(0, n, UPDATE_BATCH):
        stop = min(n, start + UPDATE_BATCH)
        session.execute(stmt, [
            {"_id": int(ids[i]), "_churn_risk": float(risk[i]), "_lifecycle_stage": stage[i],
             "_predicted_value": float(value[i]), "_risk_explanation": explanation[i], "_scored_at": scored_at}
            for i in range(start, stop)])
        if progress:
            progress(stop - start)
    return n


def insert_run(session, models, values: dict[str, Any]) -> int:
    """Insert one ``prediction_run`` row (its fields are read-only, so not through the service);
    returns its id. The run number comes from the same sequence the service would use."""
    table = models.model("prediction_run").__table__
    entity = models.registry.entity("prediction_run")
    now = utcnow()
    row = {k: v for k, v in values.items() if k in table.c}
    for f in entity.fields:
        if f.type == "autonumber":
            row[f.name] = numbering.next_number(session, models.system["sequence"], f"{entity.name}.{f.name}",
                                                f.format, datetime.now())
    row.update(version=1, created_at=now, updated_at=now)
    row.update(fill_required(table, entity, models.registry, None, set(row)))
    return session.execute(table.insert().values(**row)).inserted_primary_key[0]
