"""REST list latency: the first page of customers sorted by created_at desc, on a large table.

For SQLite and PostgreSQL (a throwaway server started with tests/pgserver.py) this script

1. builds the app once on an empty database (``create_app`` + ``ensure_admin``);
2. bulk-loads ``--rows`` customers straight into the ``customer`` table (executemany on SQLite,
   COPY on PostgreSQL; required columns filled, created_at spread over a year, owner = admin,
   version = 1, ~10 % of customers with tags), then ANALYZE;
3. logs in with JWT (POST /api/v1/security/login) and times N requests of
   ``GET /api/v1/customer/?q=(order_column:created_at,order_direction:desc,page:0,page_size:25)``
   through the Flask test client (in process, no network) — p50/p95;
4. baselines in the same run: the raw SQL query for the same page (same columns, ORDER BY
   created_at DESC LIMIT 25) through the same engine, a bare Flask endpoint returning a
   constant JSON through the test client (the framework floor), (info) the same page and
   capped count run by hand behind a bare Flask endpoint — no login, no permission check, no
   access policy: the least that serving this page over HTTP costs — and (info) the page alone
   behind the same bare endpoint, without a count: the least any Flask endpoint answering with
   this page costs, whatever else it does or leaves out;
5. counts the SQL statements one list request runs (``before_cursor_execute`` on the engine).

    .venv/bin/python bench/list.py                 # 1,000,000 rows, both backends; ~3.5 min
    .venv/bin/python bench/list.py --quick         # 20,000 rows, 50 requests; ~30 s
    .venv/bin/python bench/list.py --rows 200000 --backends sqlite --requests 500 -v

Results: printed table + bench/results/list.json.
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

GOAL_P95_MS = 50.0
GOAL_VS_RAW = 2.0
PAGE_SIZE = 25
LIST_URL = ("/api/v1/customer/?q=(order_column:created_at,order_direction:desc,"
            f"page:0,page_size:{PAGE_SIZE})")
ADMIN_PASSWORD = "bench-admin-pw-1"
BATCH = 20_000

SURNAMES = "张王李赵刘陈杨黄周吴徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "敏", "静", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超"]
CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京", "苏州", "西安", "重庆", "天津"]
WORDS = ["华信", "中科", "恒通", "瑞丰", "鼎盛", "宏远", "博达", "新元", "天成", "金桥", "海纳", "云帆"]
SUFFIXES = ["科技有限公司", "贸易有限公司", "制造有限公司", "信息技术有限公司", "咨询服务有限公司"]
STREETS = ["人民路", "中山路", "解放路", "建设路", "和平路", "新华路"]


# -- data --------------------------------------------------------------------------------------


class RowMaker:
    """Realistic-ish values for every column of the entity's table, driven by its metadata (so
    that a field added to customer.yaml is filled too). Generated a column at a time per batch:
    a per-value Python loop would make loading 1,000,000 rows take minutes."""

    YEAR_S = 365 * 86400

    def __init__(self, entity, table, registry, admin_id: int, rows: int, seed: int = 1):
        self.entity, self.table, self.registry = entity, table, registry
        self.admin_id, self.rows = admin_id, rows
        self.rng = random.Random(seed)
        self.now = datetime(2025, 6, 30, 18, 0, 0)
        self.fields = {f.column: f for f in entity.fields if f.column}
        self.columns = [c.name for c in table.columns]

    # one list of values per column -----------------------------------------------------------
    def _nulls(self, values: list, share: float = 0.2) -> list:
        """Blank out about ``share`` of an optional column."""
        rng = self.rng
        return [None if rng.random() < share else v for v in values]

    def _string(self, f, ids: range) -> list:
        rng, n, k = self.rng, f.name, len(ids)
        if f.type == "phone":
            vals = [f"1{p}{r:09d}" for p, r in zip(rng.choices("3589", k=k), rng.choices(range(10**9), k=k))]
        elif f.type == "email":
            vals = [f"contact{i}@example{i % 97}.com" for i in ids]
        elif f.type == "url":
            vals = [f"https://www.company{i}.example.com" for i in ids]
        elif f.type == "autonumber":
            vals = [f"C{i:09d}" for i in ids]
        elif n == "name":
            vals = [f"{c}{w}{s}{i}" for c, w, s, i in zip(rng.choices(CITIES, k=k), rng.choices(WORDS, k=k),
                                                           rng.choices(SUFFIXES, k=k), ids)]
        elif "contact" in n or n.endswith("person"):
            vals = [a + b for a, b in zip(rng.choices(SURNAMES, k=k), rng.choices(GIVEN, k=k))]
        elif n == "credit_code":
            return [f"91{i:016d}" if i % 2 == 0 else None for i in ids]  # unique, matches the pattern
        elif "address" in n:
            vals = [f"{c}市{s}{r}号" for c, s, r in zip(rng.choices(CITIES, k=k), rng.choices(STREETS, k=k),
                                                       rng.choices(range(1, 999), k=k))]
        elif f.unique:
            vals = [f"{n}-{i}" for i in ids]
        else:
            vals = [f"{n} {r}" for r in rng.choices(range(10**6), k=k)]
        if f.max_length:
            cut = f.max_length
            vals = [v[-cut:] if f.unique else v[:cut] for v in vals]
        return vals

    def _column(self, col: str, ids: range, created: list) -> list:
        rng, k = self.rng, len(ids)
        if col == "id":
            return list(ids)
        if col == "version":
            return [1] * k
        if col == "created_at":
            return created
        if col == "updated_at":
            return [c + timedelta(seconds=s) for c, s in zip(created, rng.choices(range(86400 * 7), k=k))]
        f = self.fields.get(col)
        if f is None:
            return [None] * k
        if f.storage == "fk_user":
            return [self.admin_id] * k
        if f.storage == "fk_entity":
            return [None] * k  # no reference targets loaded (customer has none)
        if f.storage == "code":
            vals = rng.choices([i.code for i in self.registry.dictionary(f.dictionary).items], k=k)
        elif f.storage == "string":
            vals = self._string(f, ids)
        elif f.storage == "text":
            notes = ["重点跟进", "已发送报价单", "等待客户反馈", "需安排拜访"]
            vals = [f"{t} #{i}" for t, i in zip(rng.choices(notes, k=k), ids)]
        elif f.storage == "decimal":
            vals = [c / 100 for c in rng.choices(range(10_000, 500_000_000), k=k)]
            if f.precision:  # fit NUMERIC(precision, scale) (e.g. a 0–1 score is NUMERIC(5, 4))
                top = 10 ** (f.precision - (f.scale or 0))
                vals = [round(v % top, f.scale or 0) for v in vals]
        elif f.storage == "integer":
            vals = rng.choices(range(1000), k=k)
        elif f.storage == "boolean":
            vals = rng.choices((True, False), k=k)
        elif f.storage == "date":
            vals = [(c - timedelta(days=d)).date() for c, d in zip(created, rng.choices(range(3650), k=k))]
        elif f.storage == "datetime":
            vals = [c + timedelta(hours=h) for c, h in zip(created, rng.choices(range(2000), k=k))]
        else:
            return [None] * k
        required = (f.required and not f.system) or f.type == "autonumber" or f.unique
        return vals if required else self._nulls(vals)

    def batches(self, size: int = BATCH, convert=None):
        """Lists of row tuples; ``convert(column_values) -> column_values`` adapts types per column."""
        for start in range(1, self.rows + 1, size):
            ids = range(start, min(start + size, self.rows + 1))
            created = [self.now - timedelta(seconds=s)
                       for s in self.rng.choices(range(self.YEAR_S), k=len(ids))]
            cols = [self._column(c, ids, created) for c in self.columns]
            if convert:
                cols = [convert(c) for c in cols]
            yield list(zip(*cols))

    def tag_rows(self, codes: list[str]):
        rng = random.Random(2)
        for i in range(1, self.rows + 1):
            if rng.random() < 0.1:
                for code in rng.sample(codes, rng.choice((1, 2))):
                    yield (i, code)


def _sqlite_column(values: list) -> list:
    """Values as SQLAlchemy stores them in SQLite (datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff')."""
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, datetime):
        return [None if v is None else v.strftime("%Y-%m-%d %H:%M:%S.%f") for v in values]
    if isinstance(sample, date):
        return [None if v is None else v.isoformat() for v in values]
    return values


def bulk_load(engine, maker: RowMaker, link_table, tag_codes: list[str]) -> dict:
    """Insert the rows with raw executemany (SQLite) or COPY (PostgreSQL); returns counts/timings."""
    cols = maker.columns
    t = time.perf_counter()
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        tags = 0
        if engine.dialect.name == "sqlite":
            cur = dbapi.cursor()
            cur.execute("PRAGMA synchronous=OFF")
            sql = f"INSERT INTO {maker.table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            for batch in maker.batches(convert=_sqlite_column):
                cur.executemany(sql, batch)
            if link_table is not None:
                rows = list(maker.tag_rows(tag_codes))
                cur.executemany(f"INSERT INTO {link_table.name} (record_id, code) VALUES (?, ?)", rows)
                tags = len(rows)
            dbapi.commit()
            load_s = time.perf_counter() - t
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("ANALYZE")
            dbapi.commit()
        else:
            with dbapi.cursor() as cur:
                with cur.copy(f"COPY {maker.table.name} ({', '.join(cols)}) FROM STDIN") as copy:
                    for batch in maker.batches():
                        for row in batch:
                            copy.write_row(row)
                if link_table is not None:
                    rows = list(maker.tag_rows(tag_codes))
                    with cur.copy(f"COPY {link_table.name} (record_id, code) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                    tags = len(rows)
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{maker.table.name}', 'id'), "
                            f"(SELECT max(id) FROM {maker.table.name}))")
            dbapi.commit()
            load_s = time.perf_counter() - t
            dbapi.autocommit = True
            with dbapi.cursor() as cur:
                cur.execute("VACUUM ANALYZE")  # sets the visibility map too (index-only scans)
            dbapi.autocommit = False
    finally:
        raw.close()
    return {"rows": maker.rows, "tag_rows": tags, "load_s": load_s, "load_and_analyze_s": time.perf_counter() - t}


# -- measurement -------------------------------------------------------------------------------


def bare_flask_floor(n: int) -> dict:
    from flask import Flask

    app = Flask("bench_floor")
    payload = {"count": 10000, "ids": list(range(PAGE_SIZE)),
               "result": [{"id": i, "name": f"row {i}"} for i in range(PAGE_SIZE)]}

    @app.get("/ping")
    def ping():
        return payload

    client = app.test_client()
    samples = _common.time_calls(lambda: client.get("/ping"), n)
    return _common.summary_ms(samples)


def bench_backend(backend: str, url: str, rows: int, n_requests: int, workdir: Path, verbose: bool) -> dict:
    from sqlalchemy import event, text

    from crm_meta.cli import ensure_admin
    from crm_meta.web.factory import create_app

    out: dict = {"backend": backend, "rows": rows, "requests": n_requests}
    t = time.perf_counter()
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "INSTANCE_PATH": str(workdir),
                      "SECRET_KEY": "bench-list-secret-key-0123456789abcdef", "CRM_ADMIN_PASSWORD": ADMIN_PASSWORD,
                      "CRM_SCHEMA_PATH": str(_common.ROOT / "schemas")})
    out["create_app_s"] = time.perf_counter() - t
    build = app.extensions["crm"]
    with app.app_context():
        ensure_admin()
        admin_id = app.appbuilder.sm.find_user(username="admin").id
        engine = build.db.engine
        registry = build.models.registry
        entity = registry.entity("customer")
        table = build.models.model("customer").__table__
        link = build.models.link_tables.get(("customer", "tags"))
        tag_field = next((f for f in entity.fields if f.name == "tags"), None)
        tag_codes = [i.code for i in registry.dictionary(tag_field.dictionary).items] if tag_field else []
        print(f"[{backend}] loading {rows:,} customers ...", flush=True)
        maker = RowMaker(entity, table, registry, admin_id, rows)
        out["load"] = bulk_load(engine, maker, link, tag_codes)
        print(f"[{backend}] loaded in {out['load']['load_s']:.1f}s "
              f"(+ANALYZE {out['load']['load_and_analyze_s'] - out['load']['load_s']:.1f}s)", flush=True)
        build.db.session.remove()

    client = app.test_client()
    resp = client.post("/api/v1/security/login",
                       json={"username": "admin", "password": ADMIN_PASSWORD, "provider": "db", "refresh": False})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    headers = {"Authorization": f"Bearer {resp.get_json()['access_token']}"}

    def list_request():
        r = client.get(LIST_URL, headers=headers)
        if r.status_code != 200:
            raise RuntimeError(f"list answered {r.status_code}: {r.get_data(as_text=True)[:500]}")
        return r

    # correctness of what is timed: a full page, newest first
    body = list_request().get_json()
    assert len(body["result"]) == PAGE_SIZE, body
    stamps = [r["created_at"] for r in body["result"]]
    assert stamps == sorted(stamps, reverse=True), stamps
    out["count_reported"] = body["count"]

    # statements per list request
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    with app.app_context():
        event.listen(engine, "before_cursor_execute", count)
        try:
            list_request()
        finally:
            event.remove(engine, "before_cursor_execute", count)
    out["statements_per_request"] = len(statements)
    out["statements"] = statements
    if verbose:
        for s in statements:
            print(f"    SQL: {s[:200]}{'…' if len(s) > 200 else ''}")

    out["api"] = _common.summary_ms(_common.time_calls(list_request, n_requests, warmup=10))

    # raw SQL baseline: the same page, the same columns, the same engine
    cols = ", ".join(c.name for c in table.columns)
    raw_sql = text(f"SELECT {cols} FROM {table.name} ORDER BY created_at DESC LIMIT {PAGE_SIZE}")
    count_sql = text(f"SELECT count(*) FROM (SELECT id FROM {table.name} LIMIT 10001) AS capped")

    def raw_page():
        with engine.connect() as conn:
            rows_ = conn.execute(raw_sql).fetchall()
        assert len(rows_) == PAGE_SIZE

    def raw_count():
        with engine.connect() as conn:
            conn.execute(count_sql).scalar()

    # the same page and capped count by hand behind a bare Flask endpoint (no auth, no policy):
    # what serving this page over HTTP costs at the least
    import orjson
    from flask import Flask

    bare = Flask("bench_bare_sql")

    @bare.get("/page")
    def page():
        with engine.connect() as conn:
            n = conn.execute(count_sql).scalar()
            found = conn.execute(raw_sql).fetchall()
        result = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r._mapping.items()} for r in found]
        return {"count": n, "ids": [r["id"] for r in result], "result": result}

    keys = [str(c.name) for c in table.columns]

    @bare.get("/page-only")
    def page_only():
        with engine.connect() as conn:
            found = conn.execute(raw_sql).fetchall()
        body = orjson.dumps({"result": [dict(zip(keys, r)) for r in found]}, default=str)  # the fastest JSON here
        return bare.response_class(body, mimetype="application/json")

    bare_client = bare.test_client()

    with app.app_context():
        out["raw"] = _common.summary_ms(_common.time_calls(raw_page, n_requests, warmup=10))
        out["raw_count"] = _common.summary_ms(_common.time_calls(raw_count, n_requests, warmup=10))
        out["bare_sql_endpoint"] = _common.summary_ms(_common.time_calls(lambda: bare_client.get("/page"), n_requests,
                                                                         warmup=10))
        out["bare_page_only"] = _common.summary_ms(_common.time_calls(lambda: bare_client.get("/page-only"),
                                                                      n_requests, warmup=10))
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                out["explain_page"] = [r[0] for r in conn.execute(text("EXPLAIN ANALYZE " + raw_sql.text))]
        else:
            with engine.connect() as conn:
                out["explain_page"] = [str(tuple(r)) for r in conn.execute(text("EXPLAIN QUERY PLAN " + raw_sql.text))]
    with app.app_context():
        build.db.session.remove()
        engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,000 rows, 50 requests")
    ap.add_argument("--rows", type=int, default=None, help="customers to load (default 1,000,000)")
    ap.add_argument("--requests", type=int, default=None, help="timed list requests (default 200)")
    ap.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the SQL of one list request")
    args = ap.parse_args(argv)
    rows = args.rows or (20_000 if args.quick else 1_000_000)
    n_requests = args.requests or (50 if args.quick else 200)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    results: list[dict] = []
    floor = bare_flask_floor(max(n_requests, 200))
    work = Path(tempfile.mkdtemp(prefix="crm-bench-list-"))
    pg = None
    try:
        for backend in backends:
            if backend == "sqlite":
                url = f"sqlite:///{work / 'list.db'}"
            elif backend == "postgresql":
                sys.path.insert(0, str(_common.TESTS_DIR))
                from pgserver import PgServer

                pg = PgServer().start()
                url = pg.create_database("bench_list")
            else:
                raise SystemExit(f"unknown backend {backend!r}")
            results.append(bench_backend(backend, url, rows, n_requests, work, args.verbose))
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"GET {LIST_URL}")
    print(f"{rows:,} customers, {n_requests} timed requests per row below, in-process test client")
    table_rows = []
    for r in results:
        api, raw = r["api"], r["raw"]
        table_rows.append([r["backend"], "REST list (JWT)", api["p50_ms"], api["p95_ms"],
                           f"{api['p95_ms'] / raw['p95_ms']:.1f}x", r["statements_per_request"]])
        table_rows.append([r["backend"], "raw SQL page (baseline)", raw["p50_ms"], raw["p95_ms"], "1.0x", 1])
        table_rows.append([r["backend"], "raw capped count (info)", r["raw_count"]["p50_ms"],
                           r["raw_count"]["p95_ms"], "-", 1])
        bare = r["bare_sql_endpoint"]
        table_rows.append([r["backend"], "page + count by hand, bare endpoint (info)", bare["p50_ms"], bare["p95_ms"],
                           f"{bare['p95_ms'] / raw['p95_ms']:.1f}x", 2])
        only = r["bare_page_only"]
        table_rows.append([r["backend"], "page alone by hand, bare endpoint (info)", only["p50_ms"], only["p95_ms"],
                           f"{only['p95_ms'] / raw['p95_ms']:.1f}x", 1])
    table_rows.append(["-", "bare Flask JSON (floor)", floor["p50_ms"], floor["p95_ms"], "-", 0])
    print(_common.table(["db", "what", "p50 ms", "p95 ms", "p95 vs raw", "SQL stmts"], table_rows))
    print()
    print("Load: " + "; ".join(f"{r['backend']}: {r['load']['rows']:,} rows + {r['load']['tag_rows']:,} tags "
                               f"in {r['load']['load_s']:.1f}s, with ANALYZE {r['load']['load_and_analyze_s']:.1f}s, "
                               f"create_app {r['create_app_s']:.2f}s" for r in results))
    print("Statements per list request: " + "; ".join(
        f"{r['backend']}: {r['statements_per_request']}" for r in results) + "  (-v prints them), plus the "
          "per-request state read (schema generation, auth epoch) on crm_meta.web.live's own connection")
    print()
    goals = []
    for r in results:
        p95, raw95 = r["api"]["p95_ms"], r["raw"]["p95_ms"]
        goals.append([f"p95 <= {GOAL_P95_MS:.0f} ms", r["backend"], f"{p95:.1f} ms", _common.goal(p95 <= GOAL_P95_MS)])
        goals.append([f"p95 <= {GOAL_VS_RAW:.0f}x raw SQL", r["backend"], f"{p95 / raw95:.1f}x ({raw95:.2f} ms raw)",
                      _common.goal(p95 <= GOAL_VS_RAW * raw95)])
    print(_common.table(["goal", "db", "measured", "status"], goals))
    _common.print_load_note()
    path = _common.write_results("list-quick" if args.quick else "list", {
        "args": vars(args), "rows": rows, "requests": n_requests, "url": LIST_URL,
        "goals": {"p95_max_ms": GOAL_P95_MS, "vs_raw_max": GOAL_VS_RAW},
        "floor": floor, "results": results,
    })
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
