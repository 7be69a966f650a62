"""Per-customer features from the CRM's own tables, built with a handful of GROUP BY queries.

One query per table (customer, follow_up, demand, feedback, opportunity), each aggregated by
customer in the database, so 100,000 customers cost five result sets, not 500,000 queries. The
result is plain columns (``{feature: numpy array}``, one row per customer in ``ids`` order) for
:mod:`crm_lifecycle.churn`.

Field names are those of ``schemas/*.yaml``; a table or field the data dictionary does not have is
left out (its features are simply not built), so a trimmed dictionary still trains.

There are no SLA-tracked tickets yet, so "breached tickets" is approximated by what exists:
``urgent_feedback_365d`` (feedback whose ``priority`` is ``urgent``), ``complaints_365d`` and
``low_satisfaction_365d`` (satisfaction 1–2).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import and_, case, func, select

__all__ = ["FeatureTable", "build_features", "stage_groups", "CATEGORICAL", "NUMERIC", "LABEL_FIELD"]

#: customer fields used as categories (customer_type is the label, never a feature: it would leak)
CATEGORICAL = ("grade", "industry", "region", "size", "source")
NUMERIC = (
    "tenure_days", "days_since_last_follow_up", "follow_ups_30d", "follow_ups_90d", "follow_ups_365d",
    "open_demands", "high_priority_open_demands",
    "feedback_365d", "complaints_365d", "urgent_feedback_365d", "low_satisfaction_365d", "avg_satisfaction",
    "open_opportunities", "won_opportunities", "lost_opportunities", "open_amount", "won_amount",
    "max_open_probability", "annual_revenue",
)
LABEL_FIELD = "customer_type"
OPEN_DEMAND = ("pending", "in_progress")
#: an opportunity whose stage has probability >= this is won (contract signed or paid); 0 is lost
WON_PROBABILITY = 90


@dataclass
class FeatureTable:
    """Features of every customer: ``columns[name][i]`` belongs to customer ``ids[i]``."""

    ids: np.ndarray
    columns: dict[str, np.ndarray]
    customer_type: np.ndarray  # the label source (codes), kept apart from the features
    as_of: datetime
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(n for n in CATEGORICAL if n in self.columns)

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(n for n in NUMERIC if n in self.columns)

    def rows(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[mask] for k, v in self.columns.items()}


def stage_groups(dicts) -> tuple[list[str], list[str], list[str], dict[str, float]]:
    """(won, lost, open) opportunity stage codes and each stage's probability, from the dictionary
    ``opportunity_stage`` as stored (admins may change the ``probability`` attrs)."""
    won, lost, open_, prob = [], [], [], {}
    for item in dicts.items("opportunity_stage", active_only=False):
        p = item.attrs.get("probability")
        try:
            p = float(p)
        except (TypeError, ValueError):
            p = None
        if p is not None:
            prob[item.code] = p
        if p is not None and p >= WON_PROBABILITY:
            won.append(item.code)
        elif p is not None and p <= 0:
            lost.append(item.code)
        else:
            open_.append(item.code)
    return won, lost, open_, prob


def _has(registry, entity: str, *fields: str) -> bool:
    names = {e.name for e in registry.entities}
    return entity in names and all(registry.entity(entity).has_field(f) for f in fields)


def _count_if(cond):
    return func.sum(case((cond, 1), else_=0))


def _fill(ids: np.ndarray, rows, names: tuple[str, ...], default=0.0) -> dict[str, np.ndarray]:
    """Scatter ``(customer_id, v1, v2, …)`` rows into float arrays aligned with ``ids``."""
    out = {n: np.full(len(ids), default, dtype=float) for n in names}
    rows = list(rows)
    if not rows:
        return out
    key = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    pos = np.searchsorted(ids, key)
    ok = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == key)
    for j, n in enumerate(names, start=1):
        vals = np.array([np.nan if r[j] is None else float(r[j]) for r in rows], dtype=float)
        out[n][pos[ok]] = vals[ok]
    return out


def build_features(session, models, dicts, as_of: datetime | None = None) -> FeatureTable:
    """Every customer's features as of ``as_of`` (default: now, local time like ``followed_at``)."""
    registry = models.registry
    as_of = (as_of or datetime.now()).replace(microsecond=0)
    d30, d90, d365 = (as_of - timedelta(days=d) for d in (30, 90, 365))
    timings: dict[str, float] = {}

    t = time.perf_counter()
    c = models.model("customer").__table__
    cats = [n for n in CATEGORICAL if n in c.c]
    extra = [n for n in ("annual_revenue",) if n in c.c]
    rows = session.execute(select(c.c.id, c.c.created_at, c.c[LABEL_FIELD], *(c.c[n] for n in cats + extra))
                           .order_by(c.c.id)).all()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    columns: dict[str, np.ndarray] = {}
    for j, n in enumerate(cats, start=3):
        columns[n] = np.array([r[j] for r in rows], dtype=object)
    for j, n in enumerate(extra, start=3 + len(cats)):
        columns[n] = np.array([np.nan if r[j] is None else float(r[j]) for r in rows], dtype=float)
    created = np.array([r[1] for r in rows], dtype="datetime64[s]")
    columns["tenure_days"] = np.maximum(
        (np.datetime64(as_of, "s") - created).astype("timedelta64[s]").astype(float) / 86400.0, 0.0).round(1)
    customer_type = np.array([r[2] for r in rows], dtype=object)
    timings["customers_s"] = time.perf_counter() - t

    if _has(registry, "follow_up", "customer", "followed_at"):
        t = time.perf_counter()
        f = models.model("follow_up").__table__
        at = f.c.followed_at
        stmt = (select(f.c.customer_id, func.max(at), _count_if(at >= d30), _count_if(at >= d90), _count_if(at >= d365))
                .where(at <= as_of).group_by(f.c.customer_id))
        res = session.execute(stmt).all()
        last = {r[0]: r[1] for r in res}
        columns.update(_fill(ids, ((r[0], r[2], r[3], r[4]) for r in res),
                             ("follow_ups_30d", "follow_ups_90d", "follow_ups_365d")))
        last_at = np.array([last.get(int(i)) for i in ids], dtype="datetime64[s]")
        since = (np.datetime64(as_of, "s") - last_at).astype("timedelta64[s]").astype(float) / 86400.0
        columns["days_since_last_follow_up"] = np.where(np.isnat(last_at), np.nan, np.maximum(since, 0).round(1))
        timings["follow_ups_s"] = time.perf_counter() - t

    if _has(registry, "demand", "customer", "status"):
        t = time.perf_counter()
        d = models.model("demand").__table__
        is_open = d.c.status.in_(OPEN_DEMAND)
        high = and_(is_open, d.c.priority == "high") if "priority" in d.c else None
        stmt = (select(d.c.customer_id, _count_if(is_open), _count_if(high) if high is not None else func.sum(0))
                .group_by(d.c.customer_id))
        columns.update(_fill(ids, session.execute(stmt), ("open_demands", "high_priority_open_demands")))
        timings["demands_s"] = time.perf_counter() - t

    if _has(registry, "feedback", "customer", "feedback_at"):
        t = time.perf_counter()
        fb = models.model("feedback").__table__
        recent = and_(fb.c.feedback_at >= d365, fb.c.feedback_at <= as_of)
        sat = fb.c.satisfaction if "satisfaction" in fb.c else None
        parts = [_count_if(recent)]
        names = ["feedback_365d"]
        if "feedback_type" in fb.c:
            parts.append(_count_if(and_(recent, fb.c.feedback_type == "complaint")))
            names.append("complaints_365d")
        if "priority" in fb.c:
            parts.append(_count_if(and_(recent, fb.c.priority == "urgent")))
            names.append("urgent_feedback_365d")
        if sat is not None:
            parts += [_count_if(and_(recent, sat <= 2)), func.avg(sat)]
            names += ["low_satisfaction_365d", "avg_satisfaction"]
        stmt = select(fb.c.customer_id, *parts).group_by(fb.c.customer_id)
        res = session.execute(stmt).all()
        columns.update(_fill(ids, res, tuple(names)))
        if "avg_satisfaction" in names:  # no rating at all stays missing, not 0
            rated = _fill(ids, ((r[0], r[-1]) for r in res), ("x",), default=np.nan)["x"]
            columns["avg_satisfaction"] = rated
        timings["feedback_s"] = time.perf_counter() - t

    if _has(registry, "opportunity", "customer", "stage"):
        t = time.perf_counter()
        o = models.model("opportunity").__table__
        won, lost, open_, prob = stage_groups(dicts)
        amount = func.coalesce(o.c.contract_amount, o.c.amount, 0) if "contract_amount" in o.c \
            else func.coalesce(o.c.amount, 0)
        open_amount = func.coalesce(o.c.amount, 0) if "amount" in o.c else 0
        is_open, is_won = o.c.stage.in_(open_ or ["-"]), o.c.stage.in_(won or ["-"])
        probability = case(*((o.c.stage == code, p) for code, p in prob.items() if code in open_), else_=0) \
            if any(code in open_ for code in prob) else 0
        stmt = (select(o.c.customer_id, _count_if(is_open), _count_if(is_won), _count_if(o.c.stage.in_(lost or ["-"])),
                       func.sum(case((is_open, open_amount), else_=0)), func.sum(case((is_won, amount), else_=0)),
                       func.max(case((is_open, probability), else_=0)))
                .group_by(o.c.customer_id))
        columns.update(_fill(ids, session.execute(stmt), (
            "open_opportunities", "won_opportunities", "lost_opportunities", "open_amount", "won_amount",
            "max_open_probability")))
        timings["opportunities_s"] = time.perf_counter() - t

    return FeatureTable(ids, columns, customer_type, as_of, timings)
