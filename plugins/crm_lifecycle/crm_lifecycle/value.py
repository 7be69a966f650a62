"""Predicted value of every customer over the next 12 months: BG/NBD + Gamma-Gamma, with a fallback.

Transactions are the customer's **won opportunities** (stage probability >= 90: contract signed or
paid), dated by ``effective_date`` (else ``expected_close_date``, else the day the opportunity was
created) and valued at ``contract_amount`` (else ``amount``); several on one day count as one
purchase. From them, in weeks up to today:

* BG/NBD (:mod:`crm_lifecycle.bgnbd`) gives each buyer's expected number of purchases in the next
  52 weeks and P(alive);
* Gamma-Gamma (:mod:`crm_lifecycle.gammagamma`) gives each buyer's expected value per purchase
  (buyers without a repeat purchase get the population mean);
* ``predicted_value = expected purchases x expected value per purchase`` (their open deals are
  not added: they are among the purchases the model forecasts).

**Fallback.** When the history is too thin to fit the models (fewer than ``MIN_REPEAT_BUYERS``
customers with a repeat purchase, or a fit fails), and always for customers who never bought,
the value is the expected value of the open pipeline — sum of ``amount x stage probability`` of
the open opportunities — plus, for buyers, their won amount per year so far, both times
``1 - churn_risk``. Which method was used is returned in ``ValueResult.method`` and stored with the
run's metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import case, func, select

from . import bgnbd, gammagamma, summary
from .features import stage_groups

__all__ = ["ValueResult", "predict_value", "HORIZON_WEEKS", "MIN_REPEAT_BUYERS"]

HORIZON_WEEKS = 52.0
MIN_REPEAT_BUYERS = 20  # customers with >= 1 repeat purchase needed to fit BG/NBD and Gamma-Gamma
#: above this a + b the Beta drop-out distribution is a spike (every customer drops out with the same
#: p = a / (a + b)); the likelihood is flat along a + b there and the forecast's hypergeometric term
#: overflows, so a and b are scaled down to this sum, keeping p (log-likelihood changes < 0.01)
MAX_A_PLUS_B = 1e4


@dataclass
class ValueResult:
    value: np.ndarray  # per customer (ids order), CNY over the next HORIZON_WEEKS
    method: str  # "bgnbd+gammagamma" or "fallback: <why>"
    metrics: dict = field(default_factory=dict)


def _won_deals(session, models, dicts, as_of: datetime):
    """(customer id, day, amount) arrays of the won opportunities up to ``as_of``."""
    o = models.model("opportunity").__table__
    won, _lost, _open, _prob = stage_groups(dicts)
    if not won:
        return np.array([], dtype=np.int64), np.array([], dtype="datetime64[D]"), np.array([])
    cols = [o.c.customer_id, o.c.effective_date if "effective_date" in o.c else None,
            o.c.expected_close_date if "expected_close_date" in o.c else None, o.c.created_at,
            o.c.contract_amount if "contract_amount" in o.c else None, o.c.amount if "amount" in o.c else None]
    rows = session.execute(select(*(c for c in cols if c is not None)).where(o.c.stage.in_(won))).all()
    present = [c is not None for c in cols]
    cust, days, amounts = [], [], []
    for r in rows:
        it = iter(r)
        cid, eff, exp, created, contract, amount = (next(it) if p else None for p in present)
        day = eff or exp or (created.date() if created else None)
        if day is None:
            continue
        cust.append(cid)
        days.append(day)
        amounts.append(float(contract if contract is not None else (amount or 0)))
    days_arr = np.array(days, dtype="datetime64[D]")
    keep = days_arr <= np.datetime64(as_of.date(), "D")
    return np.array(cust, dtype=np.int64)[keep], days_arr[keep], np.array(amounts, dtype=float)[keep]


def _pipeline_value(session, models, dicts, ids: np.ndarray) -> np.ndarray:
    """Sum of amount x stage probability of every customer's open opportunities."""
    o = models.model("opportunity").__table__
    _won, _lost, open_, prob = stage_groups(dicts)
    weighted = [(o.c.stage == code, prob[code] / 100.0) for code in open_ if code in prob]
    out = np.zeros(len(ids))
    if not weighted or "amount" not in o.c:
        return out
    stmt = (select(o.c.customer_id, func.sum(func.coalesce(o.c.amount, 0) * case(*weighted, else_=0)))
            .where(o.c.stage.in_(open_)).group_by(o.c.customer_id))
    rows = session.execute(stmt).all()
    if rows:
        key = np.array([r[0] for r in rows], dtype=np.int64)
        pos = np.searchsorted(ids, key)
        ok = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == key)
        out[pos[ok]] = np.array([float(r[1] or 0) for r in rows])[ok]
    return out


def _tame(params: bgnbd.BgNbdParams) -> bgnbd.BgNbdParams:
    total = params.a + params.b
    if total <= MAX_A_PLUS_B:
        return params
    k = MAX_A_PLUS_B / total
    return bgnbd.BgNbdParams(params.r, params.alpha, params.a * k, params.b * k, params.log_likelihood, params.n)


def predict_value(session, models, dicts, ids: np.ndarray, churn_risk: np.ndarray, tenure_days: np.ndarray,
                  as_of: datetime) -> ValueResult:
    """Expected value of every customer (``ids`` sorted ascending) over the next 52 weeks."""
    retention = 1.0 - np.clip(churn_risk, 0.0, 1.0)
    names = {e.name for e in models.registry.entities}
    if "opportunity" not in names:
        return ValueResult(np.zeros(len(ids)), "fallback: no opportunity entity")
    pipeline = _pipeline_value(session, models, dicts, ids)
    cust, days, amounts = _won_deals(session, models, dicts, as_of)
    # fallback for everybody first: open pipeline + won amount per year so far, if still retained
    won_total = np.zeros(len(ids))
    if len(cust):
        pos = np.searchsorted(ids, cust)
        ok = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == cust)
        np.add.at(won_total, pos[ok], amounts[ok])
    years = np.maximum(np.nan_to_num(tenure_days, nan=365.0), 90.0) / 365.0
    value = retention * (pipeline + won_total / years)
    metrics: dict = {"buyers": 0, "repeat_buyers": 0, "horizon_weeks": HORIZON_WEEKS}
    if not len(cust):
        return ValueResult(value, "fallback: no won opportunities", metrics)

    s = summary.summarise_transactions(cust, days, amounts, observation_end=as_of.date(), unit_days=7.0)
    metrics.update(buyers=int(len(s)), repeat_buyers=int((s.x > 0).sum()))
    if metrics["repeat_buyers"] < MIN_REPEAT_BUYERS:
        return ValueResult(value, f"fallback: {metrics['repeat_buyers']} repeat buyers (< {MIN_REPEAT_BUYERS})",
                           metrics)
    try:
        params = _tame(bgnbd.fit(s.x, s.t_x, s.T))
        spend = gammagamma.fit(s.x, s.zbar)
    except (ValueError, RuntimeError, FloatingPointError) as exc:
        return ValueResult(value, f"fallback: fit failed ({exc})", metrics)
    with np.errstate(all="ignore"):
        purchases = bgnbd.expected_purchases(params, HORIZON_WEEKS, s.x, s.t_x, s.T)
        alive = bgnbd.p_alive(params, s.x, s.t_x, s.T)
        per_purchase = gammagamma.expected_average_spend(spend, s.x, s.zbar)
        buyer_value = purchases * per_purchase
    good = np.isfinite(buyer_value) & (buyer_value >= 0)
    pos = np.searchsorted(ids, s.customer)
    # buyers: the models' forecast alone (their open deals are future purchases already counted there)
    value[pos[good]] = buyer_value[good]
    metrics.update(
        bgnbd={k: round(getattr(params, k), 4) for k in ("r", "alpha", "a", "b")},
        gammagamma={k: round(getattr(spend, k), 4) for k in ("p", "q", "v")},
        mean_p_alive=round(float(np.mean(alive[good])), 4) if good.any() else None,
        mean_expected_purchases=round(float(np.mean(purchases[good])), 4) if good.any() else None,
        buyers_not_forecast=int((~good).sum()),
        buyers_without_repeat=int((s.x == 0).sum()),
    )
    return ValueResult(value, "bgnbd+gammagamma", metrics)
