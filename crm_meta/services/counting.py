"""List counts: exact up to a cap, and — on large PostgreSQL tables — the planner's estimate when it is
far above the cap, so a list of "10,000+" rows does not walk 10,001 index entries to say so.

PostgREST's `count=estimated` works the same way: exact below a threshold, planned above it. The margin
(ESTIMATE_MARGIN × the cap) keeps a stale statistic from hiding a small count: the planner would have to
be wrong by an order of magnitude. SQLite has no row estimates; there every count is exact (capped).
"""
from __future__ import annotations

import json
import threading
import time
import weakref
from typing import Any

from sqlalchemy import func, select, text

ESTIMATE_MARGIN = 10  # trust the planner only above ESTIMATE_MARGIN × cap rows
LARGE_TABLE_REFRESH_S = 60.0  # how long a table's size (pg_class.reltuples) is reused
PLAN_REFRESH_S = 60.0  # how long the planner's estimate of one statement (same SQL, same values) is reused
PLAN_CACHE_SIZE = 1024

_sizes: dict[tuple[str, str], tuple[float, float]] = {}  # (database url, table) → (rows, when read)
_plans: dict[tuple, tuple[float, float]] = {}  # (database url, SQL, values) → (planned rows, when read)
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # statement → (dialect, SQL, compiled)
_lock = threading.Lock()


def _table_rows(session: Any, table: str) -> float:
    """The table's size as PostgreSQL's statistics have it, read at most once a minute per process."""
    key = (str(session.get_bind().url), table)
    now = time.monotonic()
    with _lock:
        hit = _sizes.get(key)
    if hit and now - hit[1] < LARGE_TABLE_REFRESH_S:
        return hit[0]
    rows = session.execute(text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}).scalar()
    rows = float(rows or 0)
    with _lock:
        _sizes[key] = (rows, now)
    return rows


def _planned_rows(session: Any, stmt) -> float:
    """The planner's row estimate for ``stmt``; the same statement with the same values (every
    request of an unfiltered list) asks the planner at most once a minute per process, as the table
    sizes above (a round trip saved per list request)."""
    bind = session.get_bind()
    stmt = getattr(stmt, "statement", stmt)  # an ORM Query or a select
    with _lock:
        done = _compiled.get(stmt)
    if done is None or done[0] is not bind.dialect:  # a statement kept by its caller compiles once
        compiled = stmt.compile(dialect=bind.dialect, compile_kwargs={"render_postcompile": True})  # IN expanded
        done = (bind.dialect, str(compiled), compiled)
        with _lock:
            _compiled[stmt] = done
    _, sql, compiled = done
    params = compiled.params  # evaluated now: a bound value given as a callable (e.g. SLA's `now`) is current
    try:
        key = (str(bind.url), sql, tuple(sorted((k, repr(v)) for k, v in params.items())))
    except TypeError:  # pragma: no cover - unorderable parameter names: ask every time
        key = None
    now = time.monotonic()
    if key is not None:
        with _lock:
            hit = _plans.get(key)
        if hit and now - hit[1] < PLAN_REFRESH_S:
            return hit[0]
    plan = session.connection().exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params).scalar()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    rows = float(plan[0]["Plan"]["Plan Rows"])
    if key is not None:
        with _lock:
            if len(_plans) >= PLAN_CACHE_SIZE:
                _plans.clear()
            _plans[key] = (rows, now)
    return rows


def above_cap(session: Any, table: str, candidates, cap: int) -> bool:
    """True when the planner is sure each of ``candidates`` (selects of the rows to count) alone has far
    more than ``cap`` rows — only asked on PostgreSQL, for tables far larger than that."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    if _table_rows(session, table) < ESTIMATE_MARGIN * cap:
        return False
    return any(_planned_rows(session, stmt) >= ESTIMATE_MARGIN * cap for stmt in candidates)


def capped_total(parts, cap: int):
    """SQL: the counts of the disjoint ``parts`` (selects), each counted up to ``cap``, summed (take
    ``min(…, cap)`` of it). Uncorrelated: as a column of another statement it is evaluated once."""
    subqueries = [select(func.count()).select_from(p.limit(cap + 1).subquery()).scalar_subquery().correlate(None)
                  for p in parts]
    total = subqueries[0]
    for sub in subqueries[1:]:
        total = total + sub
    return total


def capped_count(session: Any, parts, cap: int) -> int:
    """The exact count of the union of disjoint ``parts`` (selects), each counted up to ``cap``."""
    return min(session.execute(select(capped_total(parts, cap))).scalar_one(), cap)
