"""A generated CRM — customers with follow-ups, demands, feedback and opportunities — bulk-inserted.

For the plugin's tests (a few hundred customers) and ``bench/lifecycle.py`` (100,000). Rows go
straight into the tables with ``executemany`` (not through ``RecordService``: 100,000 customers and
about a million history rows would take many minutes that way); stamps, ``version`` 1 and unique
numbers are filled here, and any other NOT NULL column the data dictionary may have gained (a new
required field, a system column) gets a plain value of its type, so the loader keeps working when
``schemas/`` grows.

The churn signal is built in, as in a real CRM: customers who churn had fewer follow-ups, more
complaints and lower satisfaction, and their history stops some months before today. Customer
types: prospect / intent (never bought), won (retained) and churned. Same ``seed``, same data
(dates relative to ``as_of``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

import numpy as np

from .bulk import fill_required

__all__ = ["Generated", "load_sample_crm"]

BATCH = 20_000  # rows per executemany
INDUSTRIES = ("internet", "manufacturing", "retail", "services", "finance", "education", "healthcare", "logistics")
REGIONS = ("north", "east", "south", "central", "west", "northeast")
SIZES = ("micro", "small", "medium", "large", None)
SOURCES = ("trade_show", "online_ads", "referral", "website", "cold_call", None)
GRADES = ("A", "B", "C", None)
METHODS = ("phone", "visit", "email", "wechat", "sms")


@dataclass
class Generated:
    """How many rows of each entity were inserted, and the ids of the customers."""

    counts: dict[str, int]
    customer_ids: np.ndarray
    customer_type: np.ndarray


def _codes(registry, dictionary: str, wanted: Iterable[Any]) -> list[Any]:
    """``wanted`` codes that the dictionary has (so a trimmed dictionary still loads)."""
    have = {i.code for i in registry.dictionary(dictionary).items} if registry.has_dictionary(dictionary) else set()
    return [c for c in wanted if c is None or c in have] or [next(iter(have), None)]


def _insert(conn, models, entity_name: str, columns: dict[str, Any], n: int, owner_id: int) -> int:
    """Insert ``n`` rows given as columns (lists/arrays or scalars) plus stamps and fillers."""
    if n == 0 or entity_name not in models.models:
        return 0
    table = models.model(entity_name).__table__
    entity = models.registry.entity(entity_name)
    columns = {k: v for k, v in columns.items() if k in table.c}
    columns.setdefault("version", 1)
    if "created_at" in columns:
        columns.setdefault("updated_at", columns["created_at"])
    columns.setdefault("created_by_id", owner_id)
    columns.setdefault("updated_by_id", owner_id)
    columns.update(fill_required(table, entity, models.registry, owner_id, set(columns)))
    names = list(columns)
    lists = []
    for name in names:
        v = columns[name]
        lists.append(v.tolist() if isinstance(v, np.ndarray) else (list(v) if isinstance(v, (list, tuple)) else [v] * n))
    stmt = table.insert()
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        conn.execute(stmt, [dict(zip(names, row)) for row in zip(*(col[start:stop] for col in lists))])
    return n


def _days_before(as_of: datetime, days: np.ndarray) -> list[datetime]:
    base = np.datetime64(as_of.replace(microsecond=0), "s")
    stamps = base - (np.asarray(days, dtype=float) * 86400).astype("timedelta64[s]")
    return stamps.astype("datetime64[s]").astype(datetime).tolist()


def _money(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 2) for v in values]


def load_sample_crm(conn, models, *, customers: int, owner_ids: list[int], seed: int = 7,
                    as_of: datetime | None = None, churned: bool = True, prefix: str = "S") -> Generated:
    """Insert ``customers`` generated customers and their history through ``conn`` (not committed).

    ``churned=False`` makes a CRM without any churned customer (for the "cannot train" path).
    ``prefix`` keeps the generated numbers apart from those of another load into the same database.
    """
    if not owner_ids:
        raise ValueError("load_sample_crm needs at least one owner id")
    registry = models.registry
    rng = np.random.default_rng(seed)
    as_of = (as_of or datetime.now()).replace(microsecond=0)
    n = customers
    owner = rng.choice(np.asarray(owner_ids), n)
    first_owner = int(owner_ids[0])

    # -- customers -----------------------------------------------------------------------------
    grade_codes = _codes(registry, "grade", GRADES)
    grade = rng.choice(len(grade_codes), n, p=_weights(len(grade_codes), [0.15, 0.35, 0.35, 0.15]))
    tenure = np.minimum(rng.gamma(2.0, 330.0, n) + 20, 2500).round()  # days since the customer was created
    kind = rng.choice(4, n, p=[0.2, 0.15, 0.45, 0.2])  # prospect, intent, won, churned (before the churn model)
    engagement = rng.gamma(2.0, 3.0, n) * np.where(grade == 0, 1.6, 1.0)  # follow-ups per year while active
    complaints_rate = rng.gamma(1.0, 0.5, n)
    # churn among the customers who bought (won or churned): a logistic of latent traits
    bought = kind >= 2
    z = (-0.9 - 0.12 * engagement + 0.9 * complaints_rate + 0.5 * (grade == 2) - 0.6 * (grade == 0)
         + 0.8 * np.exp(-tenure / 300.0) + rng.normal(0, 0.6, n))
    is_churned = bought & (rng.random(n) < 1.0 / (1.0 + np.exp(-z))) & churned
    ctype_codes = _codes(registry, "customer_type", ("prospect", "intent", "won", "churned"))
    ctype = np.array([("prospect", "intent", "won", "won")[k] for k in kind], dtype=object)
    ctype[is_churned] = "churned"
    ctype = np.array([c if c in ctype_codes else ctype_codes[0] for c in ctype], dtype=object)
    # the day the customer stopped (churned ones) — their history ends there
    stop_days = np.where(is_churned, np.minimum(tenure - 1, rng.uniform(0, 300, n)), 0.0)

    created = _days_before(as_of, tenure)
    pick = lambda codes, p=None: np.array(codes, dtype=object)[rng.choice(len(codes), n, p=p)]  # noqa: E731
    cust_cols: dict[str, Any] = {
        "customer_no": [f"{prefix}C{i:08d}" for i in range(1, n + 1)],
        "name": [f"{prefix}样本客户{i:06d}有限公司" for i in range(1, n + 1)],
        "customer_type": ctype,
        "industry": pick(_codes(registry, "industry", INDUSTRIES)),
        "contact_name": "张三",
        "contact_phone": [f"139{i % 100_000_000:08d}" for i in range(n)],
        "grade": np.array(grade_codes, dtype=object)[grade],
        "source": pick(_codes(registry, "source", SOURCES)),
        "size": pick(_codes(registry, "company_size", SIZES)),
        "region": pick(_codes(registry, "region", REGIONS)),
        "annual_revenue": _money(np.where(rng.random(n) < 0.7, rng.lognormal(15, 1.2, n).round(-4), np.nan)),
        "owner_id": owner,
        "created_at": created,
    }
    counts: dict[str, int] = {}
    customer_table = models.model("customer").__table__
    before = conn.execute(customer_table.select().with_only_columns(customer_table.c.id)
                          .order_by(customer_table.c.id.desc()).limit(1)).scalar() or 0
    counts["customer"] = _insert(conn, models, "customer", cust_cols, n, first_owner)
    ids = np.array([r[0] for r in conn.execute(
        customer_table.select().with_only_columns(customer_table.c.id)
        .where(customer_table.c.id > before).order_by(customer_table.c.id))], dtype=np.int64)
    if len(ids) != n:
        raise RuntimeError(f"expected {n} new customers, found {len(ids)}")

    # -- follow-ups: a Poisson stream while the customer is active ------------------------------
    active_days = np.maximum(tenure - stop_days, 1.0)
    n_follow = rng.poisson(engagement * active_days / 365.0 * np.where(bought, 1.0, 0.6))
    n_winback = rng.poisson(np.where(is_churned, 0.5, 0.0))  # win-back calls after the customer left
    cust = np.concatenate([np.repeat(np.arange(n), n_follow), np.repeat(np.arange(n), n_winback)])
    ago = np.concatenate([
        stop_days[np.repeat(np.arange(n), n_follow)]
        + rng.random(n_follow.sum()) * (tenure - stop_days)[np.repeat(np.arange(n), n_follow)],
        rng.random(n_winback.sum()) * stop_days[np.repeat(np.arange(n), n_winback)]])
    m = len(cust)
    counts["follow_up"] = _insert(conn, models, "follow_up", {
        "record_no": [f"{prefix}G{i:09d}" for i in range(1, m + 1)],
        "customer_id": ids[cust], "followed_at": _days_before(as_of, ago),
        "method": np.array(_codes(registry, "follow_up_method", METHODS), dtype=object)[rng.choice(5, m) % len(
            _codes(registry, "follow_up_method", METHODS))],
        "content": "跟进", "owner_id": owner[cust], "created_at": _days_before(as_of, ago),
    }, m, first_owner)

    # -- demands: open ones are recent ------------------------------------------------------------
    n_dem = rng.poisson(0.6, n)
    cust = np.repeat(np.arange(n), n_dem)
    m = len(cust)
    ago = stop_days[cust] + rng.random(m) * (tenure[cust] - stop_days[cust])
    status = np.where(ago < 60, np.where(rng.random(m) < 0.5, "pending", "in_progress"),
                      np.where(rng.random(m) < 0.8, "done", "closed")).astype(object)
    counts["demand"] = _insert(conn, models, "demand", {
        "demand_no": [f"{prefix}D{i:09d}" for i in range(1, m + 1)], "customer_id": ids[cust],
        "demand_type": np.array(["product_inquiry", "technical_support", "custom_cooperation"], dtype=object)[
            rng.choice(3, m)],
        "description": "需求", "priority": np.array(["high", "medium", "low"], dtype=object)[rng.choice(3, m)],
        "status": status, "owner_id": owner[cust], "created_at": _days_before(as_of, ago),
    }, m, first_owner)

    # -- feedback: complaints and low satisfaction come with churn ------------------------------
    n_fb = rng.poisson(0.3 + complaints_rate * np.where(bought, 1.0, 0.3))
    cust = np.repeat(np.arange(n), n_fb)
    m = len(cust)
    ago = stop_days[cust] + rng.random(m) * np.minimum(tenure[cust] - stop_days[cust], 500)
    bad = rng.random(m) < np.clip(0.25 + 0.3 * complaints_rate[cust] + 0.25 * is_churned[cust], 0, 0.9)
    fb_type = np.where(bad, "complaint", np.where(rng.random(m) < 0.6, "suggestion", "praise")).astype(object)
    satisfaction = np.where(bad, rng.integers(1, 4, m), rng.integers(3, 6, m))
    rated = rng.random(m) < 0.8
    counts["feedback"] = _insert(conn, models, "feedback", {
        "feedback_no": [f"{prefix}F{i:09d}" for i in range(1, m + 1)], "customer_id": ids[cust],
        "feedback_type": fb_type,
        "priority": np.where(bad & (rng.random(m) < 0.4), "urgent",
                             np.where(rng.random(m) < 0.3, "important", "normal")).astype(object),
        "description": "反馈",
        "satisfaction": [int(s) if r else None for s, r in zip(satisfaction, rated)],
        "feedback_at": _days_before(as_of, ago), "owner_id": owner[cust], "created_at": _days_before(as_of, ago),
    }, m, first_owner)

    # -- opportunities: won deals for buyers (repeat business), open / lost ones for everybody ----
    n_won = np.where(bought, 1 + rng.poisson(active_days / 365.0 * (0.3 + 0.04 * engagement)), 0)
    n_other = rng.poisson(np.where(kind == 1, 1.5, 0.6), n)
    n_opp = n_won + n_other
    cust = np.repeat(np.arange(n), n_opp)
    m = len(cust)
    first_of = np.repeat(np.cumsum(n_opp) - n_opp, n_opp)
    is_won = (np.arange(m) - first_of) < n_won[cust]
    ago = stop_days[cust] + rng.random(m) * (tenure[cust] - stop_days[cust])
    open_stages = ("initial_contact", "needs_analysis", "proposal", "negotiation")
    lost_p = np.clip(0.3 + 0.4 * is_churned[cust], 0, 1)
    stage = np.where(is_won, np.where(rng.random(m) < 0.8, "won_paid", "contract_signed"),
                     np.where(rng.random(m) < lost_p, "lost",
                              np.array(open_stages, dtype=object)[rng.choice(4, m)])).astype(object)
    stage[(stage != "lost") & ~is_won & (ago > 365)] = "lost"  # old open deals were lost
    stage_codes = set(_codes(registry, "opportunity_stage", ("initial_contact", "needs_analysis", "proposal",
                                                             "negotiation", "contract_signed", "won_paid", "lost")))
    stage = np.array([s if s in stage_codes else next(iter(stage_codes)) for s in stage], dtype=object)
    amount = rng.lognormal(11.0, 0.9, m).round(-2)
    closed = _days_before(as_of, ago)
    counts["opportunity"] = _insert(conn, models, "opportunity", {
        "name": [f"{prefix}商机{i:08d}" for i in range(1, m + 1)], "customer_id": ids[cust],
        "amount": _money(amount), "stage": stage,
        "contract_amount": _money(np.where(is_won, amount * rng.uniform(0.85, 1.0, m), np.nan)),
        "effective_date": [c.date() if w else None for c, w in zip(closed, is_won)],
        "expected_close_date": [(c + timedelta(days=30)).date() for c in closed],
        "owner_id": owner[cust], "created_at": _days_before(as_of, ago + 30),
    }, m, first_owner)
    return Generated(counts, ids, ctype)


def _weights(k: int, wanted: list[float]) -> list[float]:
    w = np.asarray((wanted + [0.1] * k)[:k], dtype=float)
    return (w / w.sum()).tolist()
