"""Seeded synthetic data for benchmarks and tests (numpy only).

* :func:`crm_customers` -- CRM-like customer features with a known churn signal.
* :func:`bgnbd_summaries` -- (x, t_x, T) simulated from the BG/NBD process itself, so a fit can
  be checked for recovering the parameters it was generated with.
"""

from __future__ import annotations

import numpy as np

__all__ = ["crm_customers", "bgnbd_summaries", "CHURN_DRIVERS", "NOISE_FEATURES"]

INDUSTRIES = np.array(
    ["制造业", "零售", "IT服务", "金融", "教育", "医疗", "物流", "建筑", "能源", "餐饮", "政府", "其他"], dtype=object
)
REGIONS = np.array(["华东", "华南", "华北", "华中", "西南", "西北", "东北", "海外"], dtype=object)
LEVELS = np.array(["A", "B", "C", "D"], dtype=object)
SOURCES = np.array(["官网", "转介绍", "展会", "电话开发", "合作伙伴", "广告"], dtype=object)
TEAMS = np.array(["一组", "二组", "三组", "四组", "五组"], dtype=object)
TERMS = np.array(["预付", "月结", "季结"], dtype=object)

#: the features that carry the churn signal of :func:`crm_customers`, strongest first
CHURN_DRIVERS = ("days_since_last_followup", "complaints_12m", "has_contract", "won_amount_12m")
#: features drawn independently of everything else (no churn signal at all)
NOISE_FEATURES = ("industry", "region", "source", "owner_team", "payment_terms")


def crm_customers(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n`` customers with 16 features (7 categorical, 9 numeric) and a 0/1 churn label.

    The label is drawn from a logistic model of a few features (mostly those in
    :data:`CHURN_DRIVERS`, plus a non-linear tenure effect and a level x complaints
    interaction), so a good classifier reaches an AUC around 0.8 -- not 1.0.  About 5% of the
    numeric values are missing, as in a real CRM.
    """
    rng = np.random.default_rng(seed)
    level_idx = rng.choice(4, n, p=[0.1, 0.25, 0.4, 0.25])
    has_contract = rng.random(n) < 0.35 + 0.1 * (level_idx < 2)
    tenure_days = rng.gamma(2.0, 400.0, n).round()
    contacts = rng.poisson(1 + level_idx.max() - level_idx, n) + 1
    followups_90d = rng.poisson(4.0 * np.exp(-0.3 * level_idx), n)
    days_since_followup = np.minimum(rng.exponential(20 + 25 * level_idx + 40 * (followups_90d == 0), n), 720).round()
    opportunities = rng.poisson(2 + 2 * (level_idx < 2), n)
    won_amount = np.where(rng.random(n) < 0.7, rng.lognormal(10 - 0.4 * level_idx, 1.0, n), 0.0).round(2)
    open_opps = rng.binomial(opportunities, 0.3)
    complaints = rng.poisson(0.3 + 0.2 * (level_idx == 3), n)
    response_hours = rng.lognormal(2.5, 0.8, n).round(1)
    demands_open = rng.poisson(0.8, n)

    z = (
        -1.2
        + 1.1 * np.log1p(days_since_followup / 30.0)
        + 0.55 * complaints
        + 0.35 * complaints * (level_idx >= 2)
        - 1.0 * has_contract
        - 0.18 * np.log1p(won_amount / 1000.0)
        + 0.8 * np.exp(-tenure_days / 180.0)
        - 0.15 * open_opps
        + 0.1 * np.log1p(response_hours)
        - 0.6
    )
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(int)

    cols: dict[str, np.ndarray] = {
        "industry": INDUSTRIES[rng.choice(len(INDUSTRIES), n)],
        "region": REGIONS[rng.choice(len(REGIONS), n, p=[0.3, 0.2, 0.2, 0.1, 0.08, 0.05, 0.05, 0.02])],
        "customer_level": LEVELS[level_idx],
        "source": SOURCES[rng.choice(len(SOURCES), n)],
        "owner_team": TEAMS[rng.choice(len(TEAMS), n)],
        "has_contract": np.where(has_contract, "是", "否").astype(object),
        "payment_terms": TERMS[rng.choice(len(TERMS), n, p=[0.2, 0.5, 0.3])],
        "tenure_days": tenure_days,
        "contacts": contacts.astype(float),
        "followups_90d": followups_90d.astype(float),
        "days_since_last_followup": days_since_followup,
        "opportunities": opportunities.astype(float),
        "won_amount_12m": won_amount,
        "open_opportunities": open_opps.astype(float),
        "complaints_12m": complaints.astype(float),
        "avg_response_hours": response_hours,
    }
    for name in ("won_amount_12m", "avg_response_hours", "days_since_last_followup"):
        col = cols[name].copy()
        col[rng.random(n) < 0.05] = np.nan
        cols[name] = col
    return cols, y


def bgnbd_summaries(n: int, r: float, alpha: float, a: float, b: float, T_max: float = 52.0, seed: int = 0):
    """Simulate ``n`` customers of the BG/NBD process; return (x, t_x, T) arrays.

    Each customer's first purchase is at 0 and she is observed for ``T ~ U(T_max/4, T_max)``.
    """
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.uniform(T_max / 4, T_max, n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    now = np.zeros(n)
    active = np.ones(n, dtype=bool)  # alive and still inside the observation window
    while active.any():
        idx = np.flatnonzero(active)
        nxt = now[idx] + rng.exponential(1.0, idx.size) / lam[idx]
        inside = nxt <= T[idx]
        buy = idx[inside]
        x[buy] += 1
        t_x[buy] = nxt[inside]
        now[buy] = nxt[inside]
        active[idx[~inside]] = False
        # after each purchase the customer drops out with probability p
        dies = rng.random(buy.size) < p[buy]
        active[buy[dies]] = False
    return x, t_x, T
