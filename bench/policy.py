"""Cost of the access policy: row-scoped REST lists, SQL statements per request, role sync.

1. **Scoped lists.** For SQLite and/or PostgreSQL (a throwaway server from tests/pgserver.py) the
   default app (``schemas/`` + bundled plugins, as bench/list.py) is built on an empty database,
   161 users are created (100 ``sales_rep`` in sales / sales_east / sales_south, 60 owners in
   marketing / service / operations, one ``sales_manager`` of ``sales``), each put in their
   department with ``set_member`` (rows in ``crm_member``), and ``--rows`` customers are bulk-loaded
   (executemany / COPY, the row maker of bench/list.py) with owner = one of those users — the
   measured rep owns ``--rep-share`` (1 %) of the rows, the ``sales`` subtree ``--tree-share``
   (30 %) — and ``department`` filled from the owner's ``crm_member`` row, which is what the app
   stamps (checked: two customers created through the REST API first must get the same stamp).
   Then, through the Flask test client (in process, no network; JWT bearer token from
   ``POST /api/v1/security/login``), ``GET /api/v1/customer/`` (default page size 25, default sort
   ``-created_at``) as (a) admin, (b) the rep (scope ``own``), (c) the manager (scope
   ``department_tree``), beside (d) the raw SQL of (b): ``SELECT <all columns> … WHERE owner_id = ?
   ORDER BY created_at DESC LIMIT 25`` plus the capped count, through the app's engine (the raw SQL
   of (a) and (c) is shown too, for information). The series are sampled round-robin (one
   request of each kind in turn) so that a burst of load on the machine hits all of them alike —
   except the manager's raw SQL, timed in its own rounds afterwards: its 10-15 ms on PostgreSQL,
   interleaved, made the requests after it ~0.5 ms p50 and ~1 ms p95 slower (2026-11-24, one run
   each way: admin 1.93/2.76 ms interleaved, 1.46/1.75 ms without it).
   Goal: p95 <= 50 ms and <= 1.5x admin.
2. **SQL statements per list request**, counted with a ``before_cursor_execute`` listener on the
   engine, for each user kind, over several requests (``--show-sql`` prints them); and again on
   SQLite with ``--small-rows`` customers for the same schema and for a bigger one (a temp copy of
   ``schemas/`` plus a file declaring 20 more roles and 40 more customer fields via ``extend:``;
   the rep and the manager then hold 11 roles each). Goal: constant (the same counts, request by
   request, for every user and schema) and <= 6.
3. **Role sync**: a temp schema of 100 entities x 20 fields (bench/startup.py's generator) plus 10
   roles with a grant on every entity, booted on SQLite with the engine's built-in plugins only:
   the first boot (and the ``sync_permissions`` call inside it), the no-op check, a forced re-sync
   (``permissions_digest`` deleted from ``crm_schema_state``) and a re-grant (the 10 roles'
   permissions deleted too). Goal: < 1 s.

    .venv/bin/python bench/policy.py                      # 1,000,000 rows, both databases; ~8 min
    .venv/bin/python bench/policy.py --quick              # 20,000 rows, 50 requests; ~1 min
    .venv/bin/python bench/policy.py --rows 200000 --db sqlite --show-sql
    .venv/bin/python bench/policy.py --parts sync         # only the role sync

Results: printed tables + bench/results/policy-<timestamp>.json (``-quick`` suffix for --quick).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

listbench = importlib.import_module("list")  # bench/list.py: RowMaker, bulk_load
startupbench = importlib.import_module("startup")  # bench/startup.py: the 100-entity generator

GOAL_P95_MS = 50.0
GOAL_VS_ADMIN = 1.5
GOAL_STATEMENTS = 6
GOAL_SYNC_S = 1.0
PAGE_SIZE = 25
LIST_URL = "/api/v1/customer/"  # default page size (25) and default sort (-created_at)
PASSWORD = "bench-policy-pw-1"
SECRET = "bench-policy-secret-key-0123456789abcdef"

TREE_ROOT = "sales"
REP_DEPARTMENTS = {"sales": 10, "sales_east": 45, "sales_south": 45}  # 100 reps incl. the measured one
OTHER_DEPARTMENTS = {"marketing": "marketing", "service": "service", "operations": "operations"}  # dept → role
OTHERS_PER_DEPARTMENT = 20
KINDS = ("admin", "rep", "manager")


# -- people ------------------------------------------------------------------------------------


@dataclass
class People:
    admin_id: int
    rep_id: int
    manager_id: int
    owners: list[int] = field(default_factory=list)  # user ids owning customers
    weights: list[float] = field(default_factory=list)  # share of rows per owner (sums to 1)
    department: dict[int, str | None] = field(default_factory=dict)  # user id → stamped department
    tree: list[str] = field(default_factory=list)  # departments under TREE_ROOT (manager's scope)


def make_people(app, rep_share: float, tree_share: float, rep_roles=(), manager_roles=()) -> People:
    """The users, their roles and departments; who owns which share of the customers."""
    from crm_meta.cli import ensure_admin
    from crm_meta.services.members import department_of, department_tree, set_member
    from crm_meta.services.policy import Policy, SYSTEM

    b = app.extensions["crm"]
    sm = app.appbuilder.sm
    session, registry, member = b.db.session, b.registry, b.models.system["member"]
    ensure_admin(PASSWORD)
    admin = sm.find_user(username="admin")

    def role(name):
        found = sm.find_role(name)
        assert found is not None, f"role {name!r} is not declared"
        return found

    rep = sm.add_user("rep000", "代表", "测", "rep000@bench.invalid", [role("sales_rep"), *map(role, rep_roles)],
                      PASSWORD)
    manager = sm.add_user("mgr000", "经理", "测", "mgr000@bench.invalid",
                          [role("sales_manager"), *map(role, manager_roles)], PASSWORD)
    assert rep and manager, "could not create the bench users"
    hashed = rep.password  # the other users never sign in: reuse the hash (no 160 x scrypt)
    set_member(session, registry, member, rep.id, "sales_east")
    set_member(session, registry, member, manager.id, TREE_ROOT, manager=True)
    reps, others = [rep.id], []
    k = 1
    for dept, count in REP_DEPARTMENTS.items():
        for _ in range(count - (1 if dept == "sales_east" else 0)):
            u = sm.add_user(f"rep{k:03d}", "代表", f"测{k}", f"rep{k:03d}@bench.invalid", [role("sales_rep")],
                            hashed_password=hashed, commit=False)
            session.flush()
            set_member(session, registry, member, u.id, dept)
            reps.append(u.id)
            k += 1
    for dept, role_name in OTHER_DEPARTMENTS.items():
        for j in range(OTHERS_PER_DEPARTMENT):
            name = f"{dept[:3]}{j:03d}"
            u = sm.add_user(name, "员工", f"测{j}", f"{name}@bench.invalid", [role(role_name)],
                            hashed_password=hashed, commit=False)
            session.flush()
            set_member(session, registry, member, u.id, dept)
            others.append(u.id)
    session.commit()

    rng = random.Random(7)
    jitter = [rng.uniform(0.5, 1.5) for _ in reps[1:]]
    rest = tree_share - rep_share
    weights = [rep_share] + [rest * j / sum(jitter) for j in jitter] + \
              [(1 - tree_share) / len(others)] * len(others)
    people = People(admin.id, rep.id, manager.id, reps + others, weights)
    # the stamp is the owner's crm_member department — read back through the app's own function
    people.department = {uid: department_of(session, member, uid) for uid in people.owners + [manager.id]}
    tree = department_tree(session, b.models.system["dict_item"])
    people.tree = sorted(Policy(registry, SYSTEM, tree).below(TREE_ROOT))  # what the policy will filter on
    session.remove()
    return people


class OwnedRowMaker(listbench.RowMaker):
    """bench/list.py's rows, owned by ``people`` with the given weights; ``department`` stamped
    from the owner (created_by/updated_by = the owner too)."""

    def __init__(self, entity, table, registry, people: People, rows: int, seed: int = 1):
        super().__init__(entity, table, registry, people.admin_id, rows, seed)
        rng = random.Random(seed + 100)
        self.owner_of = rng.choices(people.owners, weights=people.weights, k=rows)
        self.dept = people.department
        self.owner_col = f"{entity.owner_field}_id"
        self.dept_col = entity.field("department").column if entity.has_field("department") else None

    def _column(self, col, ids, created):
        if col in (self.owner_col, "created_by_id", "updated_by_id"):
            return [self.owner_of[i - 1] for i in ids]
        if col == self.dept_col:
            return [self.dept[self.owner_of[i - 1]] for i in ids]
        f = self.fields.get(col)
        if f is not None and f.storage == "decimal" and (f.precision or 18) - (f.scale or 2) < 10:
            # list.py's values reach 5,000,000: too wide for e.g. the lifecycle plugin's NUMERIC(5, 4)
            top, scale = 10 ** ((f.precision or 18) - (f.scale or 2)), f.scale if f.scale is not None else 2
            vals = [round(self.rng.random() * top * 0.999, scale) for _ in ids]
            return vals if f.required and not f.system else self._nulls(vals)
        return super()._column(col, ids, created)


# -- app ---------------------------------------------------------------------------------------


def app_config(url: str, workdir: Path, schema_path: Path, plugins: bool = True) -> dict:
    config = {"SQLALCHEMY_DATABASE_URI": url, "INSTANCE_PATH": str(workdir), "SECRET_KEY": SECRET,
              "CRM_ADMIN_PASSWORD": PASSWORD, "CRM_SCHEMA_PATH": str(schema_path)}
    if not plugins:  # only the engine's built-in plugins (bundled ones extend customer/contact)
        from crm_meta.plugins import load_plugins

        config["CRM_PLUGIN_PATH"] = ""
        config["CRM_DISABLED_PLUGINS"] = ",".join(
            i.name for i in load_plugins(config, strict=False).infos if i.origin != "built-in")
    return config


def load_customers(app, people: People, rows: int) -> dict:
    b = app.extensions["crm"]
    registry = b.models.registry
    entity = registry.entity("customer")
    table = b.models.model("customer").__table__
    link = b.models.link_tables.get(("customer", "tags"))
    tag_field = next((f for f in entity.fields if f.name == "tags"), None)
    tag_codes = [i.code for i in registry.dictionary(tag_field.dictionary).items] if tag_field else []
    with app.app_context():
        maker = OwnedRowMaker(entity, table, registry, people, rows)
        out = listbench.bulk_load(b.db.engine, maker, link, tag_codes)
        b.db.session.remove()
    return out


def login(client, username: str) -> dict:
    resp = client.post("/api/v1/security/login",
                       json={"username": username, "password": PASSWORD, "provider": "db", "refresh": False})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return {"Authorization": f"Bearer {resp.get_json()['access_token']}"}


def check_stamp(app, client, headers: dict, people: People) -> dict:
    """Create two customers through the REST API (the rep's own; one the admin gives to a
    sales_south rep), compare their stamped department with what the loader writes, remove them."""
    from sqlalchemy import text

    body = {"name": "盖章检查有限公司", "customer_type": "prospect", "industry": "retail",
            "contact_name": "王五", "contact_phone": "13812345678"}
    other = next(u for u in people.owners if people.department[u] == "sales_south")
    made = []
    for who, extra, owner in (("rep", {}, people.rep_id), ("admin", {"owner": other}, other)):
        r = client.post(LIST_URL, json={**body, **extra, "name": f"{body['name']}{who}"}, headers=headers[who])
        if r.status_code != 201:
            raise RuntimeError(f"stamp check: POST as {who} answered {r.status_code}: {r.get_data(as_text=True)[:400]}")
        made.append((r.get_json()["id"], owner))
    b = app.extensions["crm"]
    link = b.models.link_tables.get(("customer", "tags"))
    ids = ",".join(str(i) for i, _ in made)
    with app.app_context():
        with b.db.engine.begin() as conn:
            got = {rid: conn.execute(text("SELECT owner_id, department FROM customer WHERE id = :i"),
                                     {"i": rid}).one() for rid, _ in made}
            if link is not None:
                conn.execute(text(f"DELETE FROM {link.name} WHERE record_id IN ({ids})"))
            conn.execute(text(f"DELETE FROM customer WHERE id IN ({ids})"))
        b.db.session.remove()
    result = {str(rid): {"owner": got[rid].owner_id, "app_stamp": got[rid].department,
                         "loader_stamp": people.department[owner]} for rid, owner in made}
    bad = {k: v for k, v in result.items() if v["app_stamp"] != v["loader_stamp"] or v["app_stamp"] is None}
    if bad:
        raise RuntimeError(f"the loader would not stamp departments like the app does: {bad}")
    return result


# -- measurement -------------------------------------------------------------------------------


def engine_of(app):
    with app.app_context():
        return app.extensions["crm"].db.engine


def count_statements(engine, fn) -> list[str]:
    """The statements ``fn`` runs. Requests must NOT run inside an outer ``app.app_context()``: Flask
    then reuses that context (and its ``g``: user, policy, permission cache) for every request."""
    from sqlalchemy import event

    seen: list[str] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        seen.append(" ".join(statement.split()) + (f"  -- params {parameters!r}" if parameters else ""))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        fn()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return seen


def short_sql(statement: str) -> str:
    """Long SELECT column lists shortened to ``<N columns>`` for printing."""
    def repl(m):
        cols = m.group(2).split(", ")
        return m.group(0) if len(cols) <= 4 else f"{m.group(1)}<{len(cols)} columns> FROM"
    return re.sub(r"(SELECT (?:DISTINCT )?)(.+?) FROM", repl, statement, count=1)


class GcWatch:
    """Pauses of the cyclic garbage collector while active (``gc.callbacks``)."""

    def __init__(self):
        self.pauses: list[tuple[int, float]] = []
        self._t = 0.0

    def _cb(self, phase, info):
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._t))

    def __enter__(self):
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._cb)

    def summary(self) -> dict:
        by_gen = {g: [p for gg, p in self.pauses if gg == g] for g in (0, 1, 2)}
        return {f"gen{g}": {"n": len(v), "total_ms": round(sum(v) * 1000, 1), "max_ms": round(max(v, default=0) * 1000, 1)}
                for g, v in by_gen.items()}


def round_robin(series: dict, n: int, warmup: int, max_s: float, watch: GcWatch | None = None) -> dict[str, list[float]]:
    """Call each function of ``series`` in turn, ``n`` rounds after ``warmup`` untimed ones; stop
    early (same number of samples for all) after ``max_s`` seconds of timed rounds."""
    for _ in range(warmup):
        for fn in series.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in series}
    started = time.perf_counter()
    with watch or GcWatch():
        for _ in range(n):
            for name, fn in series.items():
                t = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t)
            if time.perf_counter() - started > max_s:
                break
    return samples


class Lister:
    """The list request of one user kind, checked once for what it returns."""

    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def __call__(self):
        r = self.client.get(LIST_URL, headers=self.headers)
        if r.status_code != 200:
            raise RuntimeError(f"list answered {r.status_code}: {r.get_data(as_text=True)[:500]}")
        return r


def raw_queries(app, people: People):
    """The raw SQL page + capped count of each kind, through the app's engine (one connection
    checkout per call, like a request)."""
    from sqlalchemy import bindparam, text

    from crm_meta.services.records import COUNT_CAP

    b = app.extensions["crm"]
    engine = engine_of(app)
    table = b.models.model("customer").__table__
    cols = ", ".join(c.name for c in table.columns)
    wheres = {"admin": "", "rep": "WHERE owner_id = :uid",
              "manager": "WHERE owner_id = :uid OR department IN :depts"}
    params = {"admin": {}, "rep": {"uid": people.rep_id}, "manager": {"uid": people.manager_id, "depts": people.tree}}
    out = {}
    for kind, where in wheres.items():
        page = text(f"SELECT {cols} FROM customer {where} ORDER BY created_at DESC LIMIT {PAGE_SIZE}")
        count = text(f"SELECT count(*) FROM (SELECT id FROM customer {where} LIMIT {COUNT_CAP + 1}) AS capped")
        if kind == "manager":
            page = page.bindparams(bindparam("depts", expanding=True))
            count = count.bindparams(bindparam("depts", expanding=True))

        def run(page=page, count=count, p=params[kind]):
            with engine.connect() as conn:
                rows = conn.execute(page, p).fetchall()
                n = conn.execute(count, p).scalar()
            return rows, n

        out[kind] = run
    return out


def explain(engine, people: People) -> dict:
    from sqlalchemy import text

    pg = engine.dialect.name == "postgresql"
    depts = ", ".join(f"'{d}'" for d in people.tree)
    queries = {
        "rep_page": f"SELECT * FROM customer WHERE owner_id = {people.rep_id} ORDER BY created_at DESC LIMIT 25",
        "rep_count": f"SELECT count(*) FROM (SELECT id FROM customer WHERE owner_id = {people.rep_id} LIMIT 10001) c",
        "manager_page": f"SELECT * FROM customer WHERE owner_id = {people.manager_id} OR department IN ({depts}) "
                        "ORDER BY created_at DESC LIMIT 25",
        "manager_count": f"SELECT count(*) FROM (SELECT id FROM customer WHERE owner_id = {people.manager_id} "
                         f"OR department IN ({depts}) LIMIT 10001) c",
    }
    out = {}
    with engine.connect() as conn:
        for name, sql in queries.items():
            if pg:
                out[name] = [r[0] for r in conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))]
            else:
                out[name] = [str(tuple(r)) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql))]
    return out


def statements_by_kind(engine, listers: dict, repeat: int = 3) -> dict:
    out = {}
    for kind, lister in listers.items():
        runs = [count_statements(engine, lister) for _ in range(repeat)]
        out[kind] = {"counts": [len(r) for r in runs], "sql": runs[-1]}
    return out


def check_pages(app, listers: dict, raw: dict, people: People) -> dict:
    """Each user's first page: full, newest first, only rows in scope, same as the raw SQL."""
    out = {}
    for kind, lister in listers.items():
        body = lister().get_json()
        rows = body["result"]
        assert len(rows) == PAGE_SIZE, (kind, len(rows))
        stamps = [r["created_at"] for r in rows]
        assert stamps == sorted(stamps, reverse=True), (kind, stamps)
        if kind == "rep":
            assert all(r["owner"] == people.rep_id for r in rows), "rep sees a customer not theirs"
        if kind == "manager":
            assert all(r["owner"] == people.manager_id or r["department"] in people.tree for r in rows), \
                "manager sees a customer outside the sales tree"
        raw_rows, raw_count = raw[kind]()
        raw_stamps = [r.created_at.strftime("%Y-%m-%dT%H:%M:%S") if isinstance(r.created_at, datetime)
                      else str(r.created_at)[:19].replace(" ", "T") for r in raw_rows]
        assert raw_stamps == stamps, (kind, raw_stamps, stamps)
        assert min(raw_count, 10_000) == body["count"], (kind, raw_count, body["count"])
        out[kind] = {"count": body["count"], "owners_on_page": len({r["owner"] for r in rows})}
    return out


def profile(lister, n: int, path: Path) -> str | None:
    try:
        from pyinstrument import Profiler
    except ImportError:
        return None
    p = Profiler(interval=0.0005)
    p.start()
    for _ in range(n):
        lister()
    p.stop()
    path.write_text(p.output_text(unicode=True, color=False, show_all=False))
    return str(path)


# -- part 1+2: lists on a big table ------------------------------------------------------------


def bench_lists(backend: str, url: str, args, work: Path) -> dict:
    from crm_meta.web.factory import create_app

    out: dict = {"backend": backend, "rows": args.rows}
    t = time.perf_counter()
    app = create_app(app_config(url, work, _common.ROOT / "schemas"))
    out["create_app_s"] = time.perf_counter() - t
    with app.app_context():
        people = make_people(app, args.rep_share, args.tree_share)
    out["people"] = {"owners": len(people.owners), "rep_id": people.rep_id, "manager_id": people.manager_id,
                     "tree": people.tree, "rep_share": args.rep_share, "tree_share": args.tree_share}
    client = app.test_client(use_cookies=False)  # a script: bearer token, no cookie jar
    headers = {"admin": login(client, "admin"), "rep": login(client, "rep000"), "manager": login(client, "mgr000")}
    out["stamp_check"] = check_stamp(app, client, headers, people)
    print(f"[{backend}] loading {args.rows:,} customers, {len(people.owners)} owners ...", flush=True)
    out["load"] = load_customers(app, people, args.rows)
    print(f"[{backend}] loaded in {out['load']['load_s']:.1f}s "
          f"(+ANALYZE {out['load']['load_and_analyze_s'] - out['load']['load_s']:.1f}s)", flush=True)
    headers = {"admin": login(client, "admin"), "rep": login(client, "rep000"), "manager": login(client, "mgr000")}
    listers = {k: Lister(client, headers[k]) for k in KINDS}
    engine = engine_of(app)
    # no app context around the requests (see count_statements): each gets its own, as in a server
    raw = raw_queries(app, people)
    if backend == "postgresql":  # steady state: what autovacuum leaves (visibility map set for index-only scans)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE) customer")
    out["pages"] = check_pages(app, listers, raw, people)
    out["statements"] = statements_by_kind(engine, listers)
    series = {**{f"api_{k}": listers[k] for k in KINDS}, "raw_rep": raw["rep"], "raw_admin": raw["admin"]}
    print(f"[{backend}] timing {args.requests} rounds of {len(series)} ...", flush=True)
    watch = GcWatch()
    samples = round_robin(series, args.requests, args.warmup, args.max_series_s, watch)
    # (information only, and slow on PostgreSQL: timed apart so that it does not slow the others)
    samples.update(round_robin({"raw_manager": raw["manager"]}, args.requests, args.warmup, args.max_series_s))
    out["timings"] = {k: _common.summary_ms(v) for k, v in samples.items()}
    out["gc_during_timing"] = watch.summary()
    out["explain"] = explain(engine, people)
    if args.profile:
        out["profiles"] = {k: profile(listers[k], args.profile, _common.RESULTS_DIR /
                                      f"policy-profile-{backend}-{k}.txt") for k in KINDS}
    with app.app_context():
        app.extensions["crm"].db.session.remove()
    engine.dispose()
    return out


# -- part 2: statements vs schema size ---------------------------------------------------------

EXTRA_ROLES = 20
EXTRA_FIELDS = 40


def write_big_schema(directory: Path) -> Path:
    """schemas/ plus 20 roles and 40 customer fields (``extend``)."""
    shutil.copytree(_common.ROOT / "schemas", directory)
    kinds = [("string", {"length": 60}), ("integer", {}), ("money", {}), ("date", {}), ("boolean", {}),
             ("text", {}), ("datetime", {}), ("enum", {"dictionary": "industry"})]
    fields = {}
    for i in range(1, EXTRA_FIELDS + 1):
        typ, extra = kinds[(i - 1) % len(kinds)]
        fields[f"xf{i:02d}"] = {"type": typ, **extra, "label": {"zh": f"扩展{i}", "en": f"Extra {i}"}}
    scopes = ["own", "own", "department", "department_tree"]
    rules = ["hidden", "masked", "readonly"]
    roles = {}
    for r in range(1, EXTRA_ROLES + 1):
        scope = scopes[(r - 1) % len(scopes)]
        rfields = {f"xf{(r + k) % EXTRA_FIELDS + 1:02d}": rules[k % 3] for k in range(6)}
        roles[f"extra{r:02d}"] = {
            "label": {"zh": f"扩展角色{r}", "en": f"Extra role {r}"},
            "entities": {
                "customer": {"actions": ["read", "update"] + (["export"] if r % 2 else []), "scope": scope,
                             "fields": rfields},
                "contact": {"actions": ["read"], "scope": scope},
                "*": {"actions": ["read"], "scope": "own"},
            },
        }
    doc = {"version": 1, "extend": {"customer": {"fields": fields, "list": [f"xf{i:02d}" for i in range(1, 11)]}},
           "roles": roles}
    (directory / "zz_bench_extra.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return directory


def bench_schema_sizes(args, work: Path) -> dict:
    """Statements (and latency, for information) per list request for the shipped schema and a
    bigger one, on SQLite with --small-rows customers."""
    from crm_meta.web.factory import create_app

    big = write_big_schema(work / "big-schema")
    own_roles = [f"extra{r:02d}" for r in range(1, EXTRA_ROLES + 1) if (r - 1) % 4 < 2][:10]
    tree_roles = [f"extra{r:02d}" for r in range(1, EXTRA_ROLES + 1) if (r - 1) % 4 >= 2][:10]
    out = {}
    for name, schema, rep_roles, mgr_roles in (("shipped", _common.ROOT / "schemas", (), ()),
                                               ("big", big, own_roles, tree_roles)):
        db = work / f"size-{name}.db"
        app = create_app(app_config(f"sqlite:///{db}", work, schema))
        b = app.extensions["crm"]
        with app.app_context():
            people = make_people(app, args.rep_share, args.tree_share, rep_roles, mgr_roles)
            nroles = len(app.appbuilder.sm.get_all_roles())
            nfields = len(b.registry.entity("customer").fields)
        load_customers(app, people, args.small_rows)
        client = app.test_client(use_cookies=False)  # a script: bearer token, no cookie jar
        listers = {k: Lister(client, login(client, u)) for k, u in
                   (("admin", "admin"), ("rep", "rep000"), ("manager", "mgr000"))}
        engine = engine_of(app)
        stmts = statements_by_kind(engine, listers)
        samples = round_robin(listers, args.small_requests, 5, args.max_series_s)
        engine.dispose()
        out[name] = {"roles": nroles, "customer_fields": nfields, "rows": args.small_rows,
                     "rep_roles": 1 + len(rep_roles), "manager_roles": 1 + len(mgr_roles),
                     "statements": stmts, "timings": {k: _common.summary_ms(v) for k, v in samples.items()}}
        print(f"[schema {name}] {nroles} roles, {nfields} customer fields: statements "
              + ", ".join(f"{k} {v['counts']}" for k, v in stmts.items()), flush=True)
    return out


# -- part 3: role sync -------------------------------------------------------------------------


def write_sync_schema(directory: Path, entities: int, roles: int) -> Path:
    startupbench.write_dictionary(entities, directory)
    access = yaml.safe_load((_common.ROOT / "schemas" / "access.yaml").read_text())
    actions = [["read"], ["read", "create", "update"], ["read", "export"], ["all"],
               ["read", "create", "update", "delete"]]
    scopes = ["own", "department", "department_tree", "all"]
    doc = {"version": 1, "dictionaries": {"department": access["dictionaries"]["department"]}, "roles": {}}
    for r in range(1, roles + 1):
        grants = {}
        for i in range(1, entities + 1):
            grants[f"e{i:03d}"] = {"actions": actions[(r + i) % len(actions)], "scope": scopes[(r * i) % 4],
                                   "fields": {"cost": "hidden", "notes": "readonly"} if (r + i) % 3 == 0 else {}}
            if not grants[f"e{i:03d}"]["fields"]:
                del grants[f"e{i:03d}"]["fields"]
        doc["roles"][f"bench_role{r:02d}"] = {"label": {"zh": f"角色{r}", "en": f"Role {r}"},
                                              "screens": ["audit"] if r == 1 else [], "entities": grants}
        if not doc["roles"][f"bench_role{r:02d}"]["screens"]:
            del doc["roles"][f"bench_role{r:02d}"]["screens"]
    (directory / "roles.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return directory


def bench_sync(args, work: Path) -> dict:
    from flask_appbuilder.security.sqla.models import PermissionView, Role, assoc_permissionview_role
    from sqlalchemy import delete, func, select

    from crm_meta.web import permissions
    from crm_meta.web.factory import create_app

    schema = write_sync_schema(work / "sync-schema", args.sync_entities, args.sync_roles)
    db = work / "sync.db"
    calls: list[tuple[float, bool]] = []
    original = permissions.sync_permissions

    def timed(*a, **kw):
        t = time.perf_counter()
        changed = original(*a, **kw)
        calls.append((time.perf_counter() - t, changed))
        return changed

    permissions.sync_permissions = timed  # init_app imports it from the module at call time
    try:
        config = app_config(f"sqlite:///{db}", work, schema, plugins=False)
        t = time.perf_counter()
        app = create_app(config)
        first_boot = time.perf_counter() - t
        first_sync = calls[-1]
        t = time.perf_counter()
        create_app(config)
        second_boot = time.perf_counter() - t
        second_sync = calls[-1]
    finally:
        permissions.sync_permissions = original

    b = app.extensions["crm"]
    state = b.models.system["state"]
    role_names = [f"bench_role{r:02d}" for r in range(1, args.sync_roles + 1)]
    out = {"entities": args.sync_entities, "roles": args.sync_roles, "first_boot_s": first_boot,
           "first_boot_sync_s": first_sync[0], "second_boot_s": second_boot, "second_boot_sync_s": second_sync[0],
           "second_boot_changed": second_sync[1]}

    def sync():
        s = b.db.session
        with GcWatch() as watch:
            t = time.perf_counter()
            changed = original(s, app.appbuilder, app.config["AUTH_ROLE_ADMIN"], state, b.registry)
            took = time.perf_counter() - t
        return took, changed, sum(p for _, p in watch.pauses)

    with app.app_context():
        s = b.db.session
        out["permission_views"] = s.execute(select(func.count()).select_from(PermissionView)).scalar()
        role_ids = s.execute(select(Role.id).where(Role.name.in_(role_names))).scalars().all()
        out["role_grants"] = s.execute(select(func.count()).select_from(assoc_permissionview_role)
                                       .where(assoc_permissionview_role.c.role_id.in_(role_ids))).scalar()
        noop, forced, regrant = [], [], []
        for _ in range(args.sync_repeat):
            noop.append(sync())
            s.execute(delete(state).where(state.c.key == permissions.STATE_KEY))
            s.commit()
            forced.append(sync())
            s.execute(delete(state).where(state.c.key == permissions.STATE_KEY))
            s.execute(delete(assoc_permissionview_role).where(assoc_permissionview_role.c.role_id.in_(role_ids)))
            s.commit()
            regrant.append(sync())
        regranted = s.execute(select(func.count()).select_from(assoc_permissionview_role)
                              .where(assoc_permissionview_role.c.role_id.in_(role_ids))).scalar()
        assert regranted == out["role_grants"], (regranted, out["role_grants"])
        stmts = count_statements(b.db.engine, lambda: (s.execute(delete(state).where(state.c.key == permissions.STATE_KEY)),
                                               s.commit(), sync()))
        out["forced_sync_statements"] = len(stmts) - 1  # minus the DELETE
        b.db.session.remove()
        b.db.engine.dispose()
    for name, runs in (("noop", noop), ("forced", forced), ("regrant", regrant)):
        assert all(c == (name != "noop") for _, c, _ in runs), (name, runs)
        times = [t for t, _, _ in runs]
        without_gc = [t - g for t, _, g in runs]
        out[f"{name}_s"] = {"median": statistics.median(times), "max": max(times), "n": len(times),
                            "median_without_gc": statistics.median(without_gc), "max_without_gc": max(without_gc),
                            "gc_pause_max": max(g for _, _, g in runs), "all": [[round(t, 4), round(g, 4)]
                                                                                for t, _, g in runs]}
    return out


# -- report ------------------------------------------------------------------------------------


def report(results: dict, args) -> None:
    print()
    lists = results.get("lists", [])
    if lists:
        print(f"GET {LIST_URL} (page size 25, sort -created_at), Flask test client + JWT bearer token, "
              f"in process; {args.rows:,} customers")
        rows = []
        for r in lists:
            t, st = r["timings"], r["statements"]
            admin95 = t["api_admin"]["p95_ms"]
            share = {"admin": "100%", "rep": f"{args.rep_share:.0%}", "manager": f"{args.tree_share:.0%}"}
            for k, label in (("admin", "admin (superuser)"), ("rep", "sales_rep, scope own"),
                             ("manager", "sales_manager, department_tree")):
                s = t[f"api_{k}"]
                rows.append([r["backend"], f"REST {label}", share[k], s["p50_ms"], s["p95_ms"],
                             f"{s['p95_ms'] / admin95:.2f}x", "/".join(map(str, sorted(set(st[k]["counts"]))))])
            for k, label in (("rep", "raw SQL rep: page + count (d)"), ("admin", "raw SQL admin (info)"),
                             ("manager", "raw SQL manager (info)")):
                s = t[f"raw_{k}"]
                rows.append([r["backend"], label, "", s["p50_ms"], s["p95_ms"], f"{s['p95_ms'] / admin95:.2f}x", 2])
        print(_common.table(["db", "what", "rows", "p50 ms", "p95 ms", "p95/admin", "SQL stmts"], rows))
        print("n = " + ", ".join(f"{r['backend']}: {r['timings']['api_admin']['n']} per series" for r in lists)
              + "; load: " + "; ".join(f"{r['backend']} {r['load']['load_s']:.0f}s (+ANALYZE "
                                       f"{r['load']['load_and_analyze_s'] - r['load']['load_s']:.0f}s)"
                                       for r in lists))
        for r in lists:
            g = r["gc_during_timing"]
            print(f"GC pauses while timing ({r['backend']}): " + ", ".join(
                f"{k}: {v['n']} (max {v['max_ms']} ms)" for k, v in g.items()))
        print()
    sizes = results.get("schema_sizes")
    if sizes:
        print(f"Statements per list request vs schema size (SQLite, {args.small_rows:,} customers)")
        rows = []
        for name, s in sizes.items():
            for k in KINDS:
                roles = {"admin": 1, "rep": s["rep_roles"], "manager": s["manager_roles"]}[k]
                rows.append([name, s["roles"], s["customer_fields"], k, roles,
                             "/".join(map(str, s["statements"][k]["counts"])),
                             s["timings"][k]["p50_ms"], s["timings"][k]["p95_ms"]])
        print(_common.table(["schema", "roles", "cust. fields", "user", "user roles", "stmts (3 req.)",
                             "p50 ms", "p95 ms"], rows))
        print()
    sync = results.get("sync")
    if sync:
        print(f"Role sync, SQLite: {sync['entities']} entities x 20 fields, {sync['roles']} roles with a grant on "
              f"each entity ({sync['permission_views']} permission-views, {sync['role_grants']} role grants)")
        rows = [["first boot (create_app, empty db)", sync["first_boot_s"]],
                ["  of which sync_permissions", sync["first_boot_sync_s"]],
                ["second boot (create_app)", sync["second_boot_s"]],
                ["  of which sync_permissions (digest matches)", sync["second_boot_sync_s"]]]
        rows = [r + ["", ""] for r in rows]
        for key, label in (("noop", "sync, digest unchanged"), ("forced", "forced re-sync, digest deleted"),
                           ("regrant", "re-grant the 10 roles' permissions")):
            x = sync[f"{key}_s"]
            rows.append([f"{label} (median of {x['n']})", x["median"], x["max"], x["gc_pause_max"]])
        print(_common.table(["what", "seconds", "max s", "max GC pause s"], rows))
        print(f"forced re-sync runs {sync['forced_sync_statements']} SQL statements")
        print()

    goals = []
    for r in lists:
        t = r["timings"]
        admin95 = t["api_admin"]["p95_ms"]
        for k in ("rep", "manager"):
            p95 = t[f"api_{k}"]["p95_ms"]
            goals.append([f"{k} p95 <= {GOAL_P95_MS:.0f} ms", r["backend"], f"{p95:.1f} ms",
                          _common.goal(p95 <= GOAL_P95_MS)])
            goals.append([f"{k} p95 <= {GOAL_VS_ADMIN}x admin", r["backend"],
                          f"{p95 / admin95:.2f}x ({admin95:.1f} ms admin)", _common.goal(p95 <= GOAL_VS_ADMIN * admin95)])
    # constant for every user, database and schema size. A user's first request of an auth epoch
    # loads who they are (the schema-size part starts with it); the next ones do not.
    first, later = set(), set()
    for r in lists:
        for k in KINDS:
            later |= set(r["statements"][k]["counts"])  # measured after the timed requests: warm
    for s in (sizes or {}).values():
        for k in KINDS:
            first.add(s["statements"][k]["counts"][0])
            later |= set(s["statements"][k]["counts"][1:])
    counts = first | later
    if counts:
        goals.append(["SQL statements constant", "all",
                      f"{'/'.join(map(str, sorted(later)))} per request"
                      + (f" (a user's first of an auth epoch: {'/'.join(map(str, sorted(first)))})" if first else ""),
                      _common.goal(len(later) == 1 and len(first) <= 1)])
        goals.append([f"SQL statements <= {GOAL_STATEMENTS}", "all", str(max(counts)),
                      _common.goal(max(counts) <= GOAL_STATEMENTS)])
    if sync:
        worst = max(sync["forced_s"]["median"], sync["regrant_s"]["median"], sync["first_boot_sync_s"])
        goals.append([f"role sync < {GOAL_SYNC_S:.0f} s", "sqlite", f"{worst:.3f} s (slowest median)",
                      _common.goal(worst < GOAL_SYNC_S)])
        worst_max = max(sync["forced_s"]["max"], sync["regrant_s"]["max"])
        goals.append([f"role sync < {GOAL_SYNC_S:.0f} s, every run", "sqlite",
                      f"{worst_max:.3f} s (GC pause up to {max(sync[k]['gc_pause_max'] for k in ('noop_s', 'forced_s', 'regrant_s')):.3f} s)",
                      _common.goal(worst_max < GOAL_SYNC_S)])
    if goals:
        print(_common.table(["goal", "db", "measured", "status"], goals))

    for r in lists:
        for k, path in (r.get("profiles") or {}).items():
            if path:
                print(f"profile {r['backend']} {k}: {path}")
    if args.show_sql:
        shown = lists[0]["statements"] if lists else (sizes or {}).get("shipped", {}).get("statements", {})
        print()
        for k, st in shown.items():
            print(f"SQL of one list request as {k} ({len(st['sql'])} statements):")
            for i, s in enumerate(st["sql"], 1):
                print(f"  {i}. {short_sql(s)[:400]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--rows", type=int, default=None, help="customers for part 1 (default 1,000,000)")
    ap.add_argument("--requests", type=int, default=None, help="timed rounds per series (default 200)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--max-series-s", type=float, default=120.0,
                    help="stop timing a backend's rounds after this many seconds")
    ap.add_argument("--rep-share", type=float, default=0.01, help="share of rows the measured rep owns")
    ap.add_argument("--tree-share", type=float, default=0.30, help="share of rows in the sales subtree")
    ap.add_argument("--small-rows", type=int, default=20_000, help="customers for the schema-size comparison")
    ap.add_argument("--small-requests", type=int, default=100)
    ap.add_argument("--sync-entities", type=int, default=100)
    ap.add_argument("--sync-roles", type=int, default=10)
    ap.add_argument("--sync-repeat", type=int, default=5)
    ap.add_argument("--parts", default="sync,sizes,lists", help="comma list of: lists, sizes, sync")
    ap.add_argument("--show-sql", action="store_true", help="print the SQL of one list request per user kind")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="profile N list requests per kind with pyinstrument (if installed) after timing")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,000 rows, 50 requests, 5,000 small rows")
    args = ap.parse_args(argv)
    args.rows = args.rows or (20_000 if args.quick else 1_000_000)
    args.requests = args.requests or (50 if args.quick else 200)
    if args.quick:
        args.small_rows, args.small_requests, args.sync_repeat = 5_000, 30, 3
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]

    results: dict = {}
    work = Path(tempfile.mkdtemp(prefix="crm-bench-policy-"))
    _common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    pg = None
    started = time.perf_counter()
    try:
        if "sync" in parts:
            print("role sync ...", flush=True)
            results["sync"] = bench_sync(args, work)
        if "sizes" in parts:
            results["schema_sizes"] = bench_schema_sizes(args, work)
        if "lists" in parts:
            results["lists"] = []
            for backend in backends:
                if backend == "sqlite":
                    url = f"sqlite:///{work / 'policy.db'}"
                else:
                    sys.path.insert(0, str(_common.TESTS_DIR))
                    from pgserver import PgServer

                    pg = PgServer().start()
                    url = pg.create_database("bench_policy")
                try:
                    results["lists"].append(bench_lists(backend, url, args, work))
                finally:
                    if pg is not None:
                        pg.stop()
                        pg = None
                    (work / "policy.db").unlink(missing_ok=True)
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - started

    report(results, args)
    _common.print_load_note()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = _common.write_results(f"policy-{stamp}{'-quick' if args.quick else ''}", {
        "args": vars(args), "url": LIST_URL, "client": "flask test client, in process, JWT bearer",
        "goals": {"p95_max_ms": GOAL_P95_MS, "vs_admin_max": GOAL_VS_ADMIN, "statements_max": GOAL_STATEMENTS,
                  "sync_max_s": GOAL_SYNC_S},
        **results,
    })
    print(f"\nresults: {path}  (total {results['elapsed_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
