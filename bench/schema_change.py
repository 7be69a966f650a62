"""A schema change on a live CRM: add a custom field to a 1,000,000-row table and serve it, and rebuild/swap the app.

For SQLite and/or PostgreSQL (a throwaway server from tests/pgserver.py) this script

1. **Add a field.** Builds the default app (``schemas/`` + bundled plugins, as bench/list.py) on an empty
   database, fills ``customer`` with ``--rows`` rows (default 1,000,000) by one ``INSERT … SELECT`` from a
   recursive CTE (SQLite) / ``generate_series`` (PostgreSQL), then ANALYZE. Then, ``--repeat`` times
   (a new field each time): ``SchemaChanges(...).apply(add field, tables={"customer"})`` — what the
   custom-field screen runs: plan, ``ALTER TABLE``, overlay, snapshot, generation bump, one transaction —
   timed as **apply**; then the first ``GET /api/v1/customer/_info`` (JWT, admin) through the Flask test
   client, which sees the new generation, rebuilds the whole app (crm_meta.web.live) and answers with the
   field (checked) — timed as **swap + first request**; **total** = both (goal < 1 s). Beside them, in the
   same run: the raw ``ALTER TABLE customer ADD COLUMN … VARCHAR(64)`` + COMMIT on the same table (the
   column dropped again untimed), and the steady ``_info`` request (no swap).
2. **Rebuild and swap.** For the default app and for a generated 100-entity dictionary (bench/startup.py's
   generator, the engine's built-in plugins only), ``--repeat`` times: bump ``schema_generation`` and time
   ``LiveApp.swap`` (a complete new app built and swapped in), and again bump and time the next request
   (``GET /login/``: generation check + rebuild + the page); beside the steady ``/login/`` request and a
   bare Flask request (the framework floor). ``create_app`` of the same dictionary (first boot, creating
   the tables) is shown for information.

    .venv/bin/python bench/schema_change.py                   # 1,000,000 rows, both databases; ~1.5 min
    .venv/bin/python bench/schema_change.py --quick           # 20,000 rows, one repeat; ~30 s
    .venv/bin/python bench/schema_change.py --db sqlite --rows 200000

Results: printed tables + bench/results/schema_change.json (``schema_change-quick.json`` for --quick).
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

startupbench = importlib.import_module("startup")  # the N-entity dictionary generator
policybench = importlib.import_module("policy")  # app_config

GOAL_TOTAL_S = 1.0
PASSWORD = policybench.PASSWORD
INFO_URL = "/api/v1/customer/_info"
SWAP_URL = "/login/"


# -- data ----------------------------------------------------------------------------------------


def fill_customers(engine, rows: int, owner: int) -> dict:
    """``rows`` customers in one INSERT … SELECT (no ORM, no Python per row), then ANALYZE."""
    from sqlalchemy import text

    pg = engine.dialect.name == "postgresql"
    n = "s.n"
    values = {
        "version": "1",
        "customer_no": f"'B' || lpad(CAST({n} AS TEXT), 9, '0')" if pg else f"'B' || printf('%09d', {n})",
        "name": f"'基准客户' || {n}",
        "customer_type": f"CASE {n} % 3 WHEN 0 THEN 'prospect' WHEN 1 THEN 'intent' ELSE 'won' END",
        "industry": f"CASE {n} % 4 WHEN 0 THEN 'retail' WHEN 1 THEN 'internet' WHEN 2 THEN 'finance' "
                    "ELSE 'education' END",
        "contact_name": "'张三'",
        "contact_phone": f"'138' || lpad(CAST({n} AS TEXT), 8, '0')" if pg else f"'138' || printf('%08d', {n})",
        "owner_id": str(int(owner)),
        "created_at": (f"TIMESTAMP '2025-01-01' + {n} * INTERVAL '1 second'" if pg
                       else f"datetime('2025-01-01', '+' || {n} || ' seconds')"),
        "updated_at": (f"TIMESTAMP '2025-01-01' + {n} * INTERVAL '1 second'" if pg
                       else f"datetime('2025-01-01', '+' || {n} || ' seconds')"),
        "grade": f"CASE {n} % 3 WHEN 0 THEN 'A' WHEN 1 THEN 'B' ELSE 'C' END",
    }
    source = (f"generate_series(1, {int(rows)}) AS s(n)" if pg else "s")
    cte = "" if pg else f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {int(rows)}) "
    sql = (f"{cte}INSERT INTO customer ({', '.join(values)}) "
           f"SELECT {', '.join(values.values())} FROM {source}")
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text(sql))  # (text(): the driver sees '%' escaped for psycopg)
    loaded = time.perf_counter() - started
    if pg:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE customer")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    with engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM customer")).scalar()
    return {"rows": count, "load_s": loaded, "load_and_analyze_s": time.perf_counter() - started}


# -- the app -------------------------------------------------------------------------------------


def build_app(url: str, work: Path, schema_path: Path, plugins: bool):
    from crm_meta.cli import ensure_admin
    from crm_meta.web.factory import create_app

    config = policybench.app_config(url, work, schema_path, plugins=plugins)
    started = time.perf_counter()
    app = create_app(config)
    built = time.perf_counter() - started
    with app.app_context():
        ensure_admin(PASSWORD)
        app.extensions["crm"].db.session.remove()
    return app, built


def service_for(app, url: str, work: Path):
    """SchemaChanges on its own engine, as the CLI builds it (``crm_meta.cli_schema._service``)."""
    from flask_appbuilder.security.sqla.models import User
    from sqlalchemy import create_engine

    import crm_meta.db.engine  # noqa: F401  (SQLite pragmas)
    from crm_meta.services.schema_changes import SchemaChanges
    from crm_meta.settings import schema_paths

    plugins = app.extensions["crm"].models.plugins
    engine = create_engine(url)
    paths = schema_paths(app.config) + [str(p) for p in plugins.schema_paths()]
    return SchemaChanges(engine, paths, User, backup_dir=work / "backups", field_types=plugins.field_types()), engine


def jwt_headers(client) -> dict:
    resp = client.post("/api/v1/security/login",
                       json={"username": "admin", "password": PASSWORD, "provider": "db", "refresh": False})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return {"Authorization": f"Bearer {resp.get_json()['access_token']}"}


def field_names(resp) -> set[str]:
    if resp.status_code != 200:
        raise RuntimeError(f"{INFO_URL} answered {resp.status_code}: {resp.get_data(as_text=True)[:300]}")
    return {f["name"] for f in resp.get_json()["fields"]}


# -- 1. add a field --------------------------------------------------------------------------------


def raw_alter(engine, repeat: int) -> list[float]:
    """``ALTER TABLE customer ADD COLUMN`` + COMMIT on the same table; the column is dropped again (untimed)."""
    samples = []
    for k in range(repeat):
        name = f"bench_raw_{k}"
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER TABLE customer ADD COLUMN {name} VARCHAR(64)")
        samples.append(time.perf_counter() - started)
        with engine.begin() as conn:
            # SQLite resolves DROP COLUMN's name against the connection's cached schema without re-reading it:
            # a pooled connection that has not run anything since the ADD must see the new schema first.
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master" if engine.dialect.name == "sqlite"
                                 else "SELECT 1").scalar()
            conn.exec_driver_sql(f"ALTER TABLE customer DROP COLUMN {name}")
    return samples


def add_fields(app, service, client, headers, repeat: int) -> dict:
    from crm_meta.schema.overlay import CustomField, field_spec

    steady = _common.time_calls(lambda: field_names(client.get(INFO_URL, headers=headers)), 20, warmup=3)
    runs = []
    for k in range(repeat):
        name = f"bench_field_{k}"
        change = (lambda o, name=name: o.with_field(CustomField(
            "customer", name, field_spec("string", f"基准字段{k}", f"Bench field {k}", length=64), list=True)))
        t0 = time.perf_counter()
        outcome = service.apply(change, tables={"customer"})
        t1 = time.perf_counter()
        shown = field_names(client.get(INFO_URL, headers=headers))
        t2 = time.perf_counter()
        if name not in shown:
            raise RuntimeError(f"the first request after the change did not show {name}")
        runs.append({"field": name, "apply_s": t1 - t0, "first_request_s": t2 - t1, "total_s": t2 - t0,
                     "generation": outcome.generation, "steps": [c.text for c in outcome.plan.changes]})
    after = _common.time_calls(lambda: field_names(client.get(INFO_URL, headers=headers)), 20, warmup=3)
    med = {key: statistics.median(r[key] for r in runs) for key in ("apply_s", "first_request_s", "total_s")}
    return {"runs": runs, **med, "steady_before": _common.summary_ms(steady),
            "steady_after": _common.summary_ms(after), "swaps": app.extensions["crm_live"].swaps}


# -- 2. rebuild and swap -----------------------------------------------------------------------------


def swap_times(app, engine, repeat: int) -> dict:
    from crm_meta.services.schema_changes import bump_generation

    live = app.extensions["crm_live"]
    client = app.test_client()
    if client.get(SWAP_URL).status_code != 200:
        raise RuntimeError(f"{SWAP_URL} does not answer 200")
    steady = _common.time_calls(lambda: client.get(SWAP_URL), 30, warmup=5)

    def bump() -> int:
        with engine.begin() as conn:
            return bump_generation(conn)

    direct, via_request = [], []
    for _ in range(repeat):
        seen = bump()
        started = time.perf_counter()
        live.swap(live.read_generation())
        direct.append(time.perf_counter() - started)
        if live.generation != seen:
            raise RuntimeError(f"the swap did not reach generation {seen} (at {live.generation})")
        seen = bump()
        started = time.perf_counter()
        status = client.get(SWAP_URL).status_code
        via_request.append(time.perf_counter() - started)
        if status != 200 or live.generation != seen:
            raise RuntimeError(f"the request after the bump answered {status} at generation {live.generation}")
    return {"swap_s": statistics.median(direct), "swap_samples_s": direct,
            "next_request_s": statistics.median(via_request), "next_request_samples_s": via_request,
            "steady_request": _common.summary_ms(steady)}


def bare_flask(n: int = 300) -> dict:
    from flask import Flask

    bare = Flask("bench_bare")

    @bare.get("/ping")
    def ping():
        return "ok"

    client = bare.test_client()
    return _common.summary_ms(_common.time_calls(lambda: client.get("/ping"), n, warmup=20))


# -- per database ------------------------------------------------------------------------------------


def bench_backend(backend: str, new_url, args, work: Path) -> dict:
    out: dict = {"backend": backend}
    # 1. a field on the big customer table, default app
    url = new_url("default")
    app, built = build_app(url, work / f"{backend}-default", _common.ROOT / "schemas", plugins=True)
    out["default_create_app_s"] = built
    b = app.extensions["crm"]
    with app.app_context():
        engine = b.db.engine
        admin = app.appbuilder.sm.find_user(username="admin").id
    print(f"[{backend}] loading {args.rows:,} customers …", flush=True)
    out["load"] = fill_customers(engine, args.rows, admin)
    print(f"[{backend}] {out['load']['rows']:,} rows in {out['load']['load_and_analyze_s']:.1f}s; "
          "raw ALTER, then the custom fields …", flush=True)
    out["raw_alter"] = _common.summary_ms(raw_alter(engine, args.repeat))
    service, service_engine = service_for(app, url, work)
    client = app.test_client()
    headers = jwt_headers(client)
    out["add_field"] = add_fields(app, service, client, headers, args.repeat)
    service_engine.dispose()
    # 2. rebuild and swap: the default app (now with the custom fields), then 100 generated entities
    out["swap_default"] = swap_times(app, engine, args.repeat)
    _dispose(app)
    print(f"[{backend}] {args.entities} generated entities …", flush=True)
    gen_dir = work / f"schema-{args.entities}"
    if not gen_dir.exists():
        startupbench.write_dictionary(args.entities, gen_dir)
    url = new_url("generated")
    app, built = build_app(url, work / f"{backend}-generated", gen_dir, plugins=False)
    out["generated_create_app_s"] = built
    with app.app_context():
        engine = app.extensions["crm"].db.engine
    out["swap_generated"] = swap_times(app, engine, args.repeat)
    _dispose(app)
    return out


def _dispose(app) -> None:
    from crm_meta.web.live import current

    for a in {id(app): app, id(current(app)): current(app)}.values():
        with a.app_context():
            a.extensions["crm"].db.session.remove()
            a.extensions["crm"].db.engine.dispose()


def report(results: list[dict], floor: dict, args) -> None:
    print()
    print(f"1. Add a custom field to customer ({args.rows:,} rows) and serve it: median of {args.repeat}")
    rows = []
    for r in results:
        a = r["add_field"]
        rows.append([r["backend"], "SchemaChanges.apply (plan, ALTER, overlay, snapshot, generation)",
                     f"{a['apply_s'] * 1000:.0f}", "-"])
        rows.append([r["backend"], f"swap + first GET {INFO_URL} showing the field",
                     f"{a['first_request_s'] * 1000:.0f}", "-"])
        rows.append([r["backend"], "total", f"{a['total_s'] * 1000:.0f}",
                     f"{a['total_s'] / (r['raw_alter']['p50_ms'] / 1000):.0f}x"])
        rows.append([r["backend"], "raw ALTER TABLE customer ADD COLUMN + COMMIT (baseline)",
                     f"{r['raw_alter']['p50_ms']:.1f}", "1x"])
        rows.append([r["backend"], f"steady GET {INFO_URL} (no swap, info)", f"{a['steady_after']['p50_ms']:.1f}", "-"])
    print(_common.table(["db", "what", "ms", "vs raw"], rows))
    print()
    print(f"2. Rebuild and swap the app (crm_meta.web.live): median of {args.repeat}")
    rows = []
    for r in results:
        for key, label, boot in (("swap_default", "default dictionary", "default_create_app_s"),
                                 ("swap_generated", f"{args.entities} generated entities", "generated_create_app_s")):
            s = r[key]
            rows.append([r["backend"], label, f"{s['swap_s'] * 1000:.0f}", f"{s['next_request_s'] * 1000:.0f}",
                         f"{s['steady_request']['p50_ms']:.1f}", f"{r[boot] * 1000:.0f}"])
    rows.append(["-", "bare Flask request (floor)", "-", "-", f"{floor['p50_ms']:.3f}", "-"])
    print(_common.table(["db", "dictionary", "LiveApp.swap ms", f"bump + next GET {SWAP_URL} ms",
                         f"steady GET {SWAP_URL} ms", "create_app 1st boot ms (info)"], rows))
    print()
    print("Load: " + "; ".join(f"{r['backend']}: {r['load']['rows']:,} rows in {r['load']['load_s']:.1f}s "
                               f"(+ANALYZE {r['load']['load_and_analyze_s']:.1f}s)" for r in results))
    print("Steps of one apply: " + "; ".join(f"{r['backend']}: " + ", ".join(r["add_field"]["runs"][0]["steps"])
                                            for r in results))
    print()
    goals = []
    for r in results:
        t = r["add_field"]["total_s"]
        worst = max(x["total_s"] for x in r["add_field"]["runs"])
        goals.append([f"add a field and serve it < {GOAL_TOTAL_S:.0f} s", r["backend"],
                      f"{t:.2f} s (worst {worst:.2f} s)", _common.goal(t < GOAL_TOTAL_S)])
    print(_common.table(["goal", "db", "measured", "status"], goals))
    _common.print_load_note()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,000 rows, one repeat")
    ap.add_argument("--rows", type=int, default=None, help="customers (default 1,000,000)")
    ap.add_argument("--repeat", type=int, default=None, help="fields added / swaps timed (default 3)")
    ap.add_argument("--entities", type=int, default=100, help="entities of the generated dictionary (default 100)")
    ap.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    args = ap.parse_args(argv)
    args.rows = args.rows or (20_000 if args.quick else 1_000_000)
    args.repeat = args.repeat or (1 if args.quick else 3)

    floor = bare_flask()
    results = _common.per_database(args.db, "schema",
                                   lambda backend, new_url, work: bench_backend(backend, new_url, args, work))
    report(results, floor, args)
    path = _common.write_results("schema_change-quick" if args.quick else "schema_change", {
        "args": vars(args), "goal_total_s": GOAL_TOTAL_S, "bare_flask": floor, "results": results})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
