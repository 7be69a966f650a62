"""Boot time of the generated app against a hand-written Flask-AppBuilder app with the same models.

For N entities × 20 fields (string, text, integer, money, date, datetime, boolean, enum of a
generated dictionary, user owner, reference to the previous entity) this script

* writes a YAML data dictionary into a temp dir and boots ``create_app`` on it;
* writes the equivalent hand-written FAB module (explicit classes on FAB's ``Model``, one
  ``ModelView`` + ``ModelRestApi`` each, registered with ``add_view``/``add_api``, default FAB
  settings i.e. ``FAB_UPDATE_PERMS=True``, tables via ``Model.metadata.create_all(engine)``);

(the generated app runs with the engine's built-in plugins only: bundled and installed plugins are
turned off, they would add entities and fields) and boots each one in a FRESH subprocess, twice on the same SQLite file: the first boot on an
empty database, then the second boot. Timed: the app build only (``create_app`` for the generated
app; importing the generated model module + its ``create_app`` for the hand-written one — the
hand-written classes are built at import), and the whole process wall time incl. interpreter
start and library imports. The children cache bytecode as an installed app does
(``PYTHONDONTWRITEBYTECODE`` is removed from their environment): the first run of a case writes
the ``.pyc`` files, later runs use them — for both apps. Each measurement is repeated (``--repeat``) and the median reported;
a case whose first+second pair took longer than ``--max-pair-s`` is not repeated (the
hand-written N=100 baseline pays FAB's quadratic permission sync: minutes per pair).

    .venv/bin/python bench/startup.py            # N = 1, 20, 100; ~4-5 min (the hand-written
                                                 # N=100 baseline alone takes 1.5-2.5 min)
    .venv/bin/python bench/startup.py --quick    # N = 1, 5; one repeat; ~15 s
    .venv/bin/python bench/startup.py --sizes 50 --repeat 1 --keep

Results: printed table + bench/results/startup.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

GOAL_RATIO = 1.0
GOAL_BOOT_100_S = 3.0
MARK = "BENCH_RESULT "

# -- the model: 20 fields per entity ----------------------------------------------------------
# (name, YAML body, hand-written column) — kept side by side so both apps get the same tables.


def _fields(i: int) -> list[tuple[str, dict]]:
    prev = f"e{i - 1:03d}" if i > 1 else None
    fields = [
        ("name", {"type": "string", "length": 100, "required": True, "label": "Name"}),
        ("code", {"type": "string", "length": 40, "indexed": True, "label": "Code"}),
        ("summary", {"type": "string", "length": 255, "label": "Summary"}),
        ("remark", {"type": "string", "length": 255, "label": "Remark"}),
        ("notes", {"type": "text", "label": "Notes"}),
        ("details", {"type": "text", "label": "Details"}),
        ("quantity", {"type": "integer", "min": 0, "label": "Quantity"}),
        ("score", {"type": "integer", "label": "Score"}),
        ("amount", {"type": "money", "min": 0, "label": "Amount"}),
        ("cost", {"type": "money", "label": "Cost"}),
        ("start_date", {"type": "date", "label": "Start date"}),
        ("end_date", {"type": "date", "label": "End date"}),
        ("happened_at", {"type": "datetime", "label": "Happened at"}),
        ("due_at", {"type": "datetime", "label": "Due at"}),
        ("active", {"type": "boolean", "default": True, "label": "Active"}),
        ("flagged", {"type": "boolean", "label": "Flagged"}),
        ("status", {"type": "enum", "dictionary": f"e{i:03d}_status", "required": True, "default": "s1",
                    "label": "Status"}),
        ("category", {"type": "enum", "dictionary": "bench_category", "label": "Category"}),
        ("owner", {"type": "user", "required": True, "default": "current_user", "label": "Owner"}),
    ]
    if prev:
        fields.append(("previous", {"type": "reference", "entity": prev, "label": "Previous"}))
    else:  # the first entity has nothing to point at
        fields.append(("previous_code", {"type": "string", "length": 40, "label": "Previous"}))
    return fields


LIST_FIELDS = ["name", "code", "status", "amount", "owner"]  # + created_at


def write_dictionary(n: int, directory: Path) -> Path:
    """One YAML file declaring a menu, N+1 dictionaries and N entities."""
    doc: dict = {
        "version": 1,
        "menus": {"bench": {"label": {"zh": "基准", "en": "Bench"}, "order": 1}},
        "dictionaries": {
            "bench_category": {"label": "Category", "items": [
                {"code": f"c{k}", "label": f"Category {k}"} for k in range(1, 9)]},
        },
        "entities": {},
    }
    for i in range(1, n + 1):
        doc["dictionaries"][f"e{i:03d}_status"] = {"label": f"Status {i}", "items": [
            {"code": f"s{k}", "label": {"zh": f"状态{k}", "en": f"Status {k}"}} for k in range(1, 6)]}
        doc["entities"][f"e{i:03d}"] = {
            "label": {"zh": f"实体{i}", "en": f"Entity {i}"},
            "menu": "bench",
            "order": i,
            "title": "name",
            "sort": "-created_at",
            "fields": dict(_fields(i)),
            "list": LIST_FIELDS + ["created_at"],
            "search": ["name", "code"],
            "filters": ["status", "owner"],
        }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return path


# -- the hand-written equivalent ---------------------------------------------------------------

_COLUMN = {
    "string": lambda b: f"String({b.get('length', 255)})",
    "text": lambda b: "Text",
    "integer": lambda b: "Integer",
    "money": lambda b: "Numeric(18, 2)",
    "date": lambda b: "Date",
    "datetime": lambda b: "DateTime",
    "boolean": lambda b: "Boolean",
    "enum": lambda b: "String(64)",
}

_HEADER = '''"""Hand-written Flask-AppBuilder app with {n} models — generated by bench/startup.py as a baseline."""
from datetime import datetime

from flask import Flask
from flask_appbuilder import AppBuilder, Model, ModelView
from flask_appbuilder.api import ModelRestApi
from flask_appbuilder.models.sqla.base import SQLA
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.sqla.models import User
from sqlalchemy import Boolean, Column, Date, DateTime, ForeignKey, Integer, Numeric, String, Text
from sqlalchemy.orm import relationship

'''

_FACTORY = '''

def create_app(database_uri):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_uri
    app.config["SECRET_KEY"] = "bench-handwritten"
    db = SQLA()
    db.init_app(app)
    with app.app_context():
        appbuilder = AppBuilder()  # FAB defaults: FAB_UPDATE_PERMS True
        appbuilder.init_app(app, db.session)
        Model.metadata.create_all(db.engine)
        for view, name in VIEWS:
            appbuilder.add_view(view, name, category="Bench")
        for api in APIS:
            appbuilder.add_api(api)
    return app
'''


def write_handwritten(n: int, directory: Path) -> str:
    """A module ``handapp_<n>`` with explicit classes; returns the module name."""
    out = [_HEADER.format(n=n)]
    views, apis = [], []
    for i in range(1, n + 1):
        cls, table = f"E{i:03d}", f"e{i:03d}"
        lines = [
            f"class {cls}(Model):",
            f"    __tablename__ = {table!r}",
            "    id = Column(Integer, primary_key=True)",
            "    version = Column(Integer, nullable=False)",
            '    __mapper_args__ = {"version_id_col": version}',
        ]
        editable = []
        for name, body in _fields(i):
            req = ", nullable=False" if body.get("required") else ""
            idx = ", index=True" if body.get("indexed") else ""
            if body["type"] == "user":
                lines.append(f"    {name}_id = Column(Integer, ForeignKey('ab_user.id'){req}, index=True)")
                lines.append(f"    {name} = relationship(User, foreign_keys=[{name}_id])")
            elif body["type"] == "reference":
                target = body["entity"]
                lines.append(f"    {name}_id = Column(Integer, ForeignKey('{target}.id'), index=True)")
                lines.append(f"    {name} = relationship({target.upper()!r}, foreign_keys=[{name}_id])")
            else:
                default = ", default=True" if body.get("default") is True else (
                    f", default={body['default']!r}" if body.get("default") and body["type"] == "enum" else "")
                lines.append(f"    {name} = Column({_COLUMN[body['type']](body)}{req}{idx}{default})")
            editable.append(name)
        lines += [
            "    created_at = Column(DateTime, default=datetime.utcnow, nullable=False, index=True)",
            "    created_by_id = Column(Integer, ForeignKey('ab_user.id'), index=True)",
            "    created_by = relationship(User, foreign_keys=[created_by_id])",
            "    updated_at = Column(DateTime, default=datetime.utcnow, onupdate=datetime.utcnow, nullable=False)",
            "    updated_by_id = Column(Integer, ForeignKey('ab_user.id'), index=True)",
            "    updated_by = relationship(User, foreign_keys=[updated_by_id])",
            "",
            "    def __repr__(self):",
            "        return self.name or ''",
            "",
            "",
            f"class {cls}View(ModelView):",
            f"    datamodel = SQLAInterface({cls})",
            f"    list_columns = {LIST_FIELDS + ['created_at']!r}",
            f"    add_columns = edit_columns = {editable!r}",
            "    search_columns = ['name', 'code', 'status', 'owner']",
            "    base_order = ('created_at', 'desc')",
            "",
            "",
            f"class {cls}Api(ModelRestApi):",
            f"    resource_name = {table!r}",
            f"    datamodel = SQLAInterface({cls})",
            f"    list_columns = {LIST_FIELDS + ['created_at']!r}",
            f"    add_columns = edit_columns = {editable!r}",
            "    search_columns = ['name', 'code', 'status', 'owner']",
            "    base_order = ('created_at', 'desc')",
            "",
            "",
        ]
        out.append("\n".join(lines))
        views.append(f"({cls}View, {f'Entity {i}'!r})")
        apis.append(f"{cls}Api")
    out.append("VIEWS = [" + ", ".join(views) + "]\n")
    out.append("APIS = [" + ", ".join(apis) + "]\n")
    out.append(_FACTORY)
    module = f"handapp_{n}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text("\n".join(out))
    return module


# -- child processes ---------------------------------------------------------------------------

_SANITY = '''
import sqlalchemy as _sa
_eng = _sa.create_engine(URI)
with _eng.connect() as _c:
    _tables = len(_sa.inspect(_c).get_table_names())
    _pv = _c.execute(_sa.text("select count(*) from ab_permission_view")).scalar()
_eng.dispose()
_apis = sum(1 for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1/e"))
'''

CHILD_GENERATED = '''
import json, sys, time
t0 = time.perf_counter()
from crm_meta.web.factory import create_app
config = {config!r}
try:  # only the engine's built-in plugins: bundled/installed ones add entities and fields
    from crm_meta.plugins import load_plugins
    config["CRM_PLUGIN_PATH"] = ""
    config["CRM_DISABLED_PLUGINS"] = ",".join(
        i.name for i in load_plugins(config, strict=False).infos if i.origin != "built-in")
except ImportError:
    pass
t1 = time.perf_counter()
app = create_app(config)
t2 = time.perf_counter()
URI = {uri!r}
''' + _SANITY + '''
print({mark!r} + json.dumps({{"imports_s": t1 - t0, "build_s": t2 - t1, "tables": _tables,
      "permission_views": _pv, "api_routes": _apis}}))
'''

CHILD_HANDWRITTEN = '''
import json, sys, time
t0 = time.perf_counter()
import flask, flask_appbuilder, flask_appbuilder.api, sqlalchemy
import flask_appbuilder.models.sqla.base, flask_appbuilder.models.sqla.interface
import flask_appbuilder.security.sqla.models
t1 = time.perf_counter()
sys.path.insert(0, {moddir!r})
import {module} as m
app = m.create_app({uri!r})
t2 = time.perf_counter()
URI = {uri!r}
''' + _SANITY + '''
print({mark!r} + json.dumps({{"imports_s": t1 - t0, "build_s": t2 - t1, "tables": _tables,
      "permission_views": _pv, "api_routes": _apis}}))
'''


def run_child(code: str) -> dict:
    t = time.perf_counter()
    env = _common.clean_env()
    # Bytecode cached, as an installed app has it: with PYTHONDONTWRITEBYTECODE (set on some
    # machines) every boot compiled crm_meta's ~35 start-up modules from source (~50 ms).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run([_common.python(), "-c", code], capture_output=True, text=True,
                          env=env, cwd=tempfile.gettempdir(), timeout=600)
    wall = time.perf_counter() - t
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"child failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result = json.loads(line[len(MARK):])
    result["process_s"] = wall
    return result


def boot_pair(kind: str, n: int, work: Path, rep: int) -> tuple[dict, dict]:
    """First boot on an empty SQLite file, then the second boot on the same file."""
    dbdir = work / f"{kind}-{n}-{rep}"
    dbdir.mkdir(parents=True)
    uri = f"sqlite:///{dbdir / 'app.db'}"
    if kind == "generated":
        config = {"SQLALCHEMY_DATABASE_URI": uri, "CRM_SCHEMA_PATH": str(work / f"schema-{n}"),
                  "INSTANCE_PATH": str(dbdir), "SECRET_KEY": "bench"}
        code = CHILD_GENERATED.format(config=config, uri=uri, mark=MARK)
    else:
        code = CHILD_HANDWRITTEN.format(moddir=str(work / "hand"), module=f"handapp_{n}", uri=uri, mark=MARK)
    return run_child(code), run_child(code)


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: N = 1, 5 and one repeat")
    ap.add_argument("--sizes", default=None, help="comma-separated entity counts (default 1,20,100)")
    ap.add_argument("--repeat", type=int, default=None, help="boots per measurement, median reported (default 3)")
    ap.add_argument("--max-pair-s", type=float, default=12.0,
                    help="stop repeating a case once one first+second pair took longer than this "
                         "(the hand-written N=100 baseline takes minutes; default 12)")
    ap.add_argument("--db-dir", default=None,
                    help="where the SQLite files go (default: the system temp dir, i.e. on disk; "
                         "/dev/shm takes fsync out of the picture)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (YAML, hand-written modules, DBs)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or ("1,5" if args.quick else "1,20,100")).split(",")]
    repeat = args.repeat or (1 if args.quick else 3)

    work = Path(tempfile.mkdtemp(prefix="crm-bench-startup-", dir=args.db_dir))
    results: list[dict] = []
    # Untimed warm-up: byte-compile and page in the libraries once, so that the first measured
    # process does not pay for it.
    subprocess.run([_common.python(), "-c", "import crm_meta.web.factory, crm_meta.web.api, "
                    "crm_meta.web.views, crm_meta.services.schema_sync, alembic.autogenerate"],
                   env=_common.clean_env(), capture_output=True, cwd=tempfile.gettempdir())
    try:
        for n in sizes:
            write_dictionary(n, work / f"schema-{n}")
            write_handwritten(n, work / "hand")
            row: dict = {"entities": n, "fields_per_entity": 20, "repeat": repeat}
            for kind in ("generated", "handwritten"):
                firsts, seconds = [], []
                for rep in range(repeat):
                    first, second = boot_pair(kind, n, work, rep)
                    firsts.append(first)
                    seconds.append(second)
                    print(f"  N={n:<3} {kind:<11} #{rep + 1}: first {first['build_s']:.2f}s "
                          f"(process {first['process_s']:.2f}s), second {second['build_s']:.2f}s "
                          f"(process {second['process_s']:.2f}s)", flush=True)
                    if first["process_s"] + second["process_s"] > args.max_pair_s:
                        break  # slow enough that noise matters little; keep the run short
                row[kind] = {
                    "runs_used": len(firsts),
                    "first_build_s": median_of(firsts, "build_s"),
                    "first_process_s": median_of(firsts, "process_s"),
                    "second_build_s": median_of(seconds, "build_s"),
                    "second_process_s": median_of(seconds, "process_s"),
                    "imports_s": median_of(firsts + seconds, "imports_s"),
                    "tables": firsts[0]["tables"],
                    "permission_views": firsts[0]["permission_views"],
                    "api_routes": firsts[0]["api_routes"],
                    "runs": {"first": firsts, "second": seconds},
                }
            g, h = row["generated"], row["handwritten"]
            row["ratio_first"] = g["first_build_s"] / h["first_build_s"]
            row["ratio_second"] = g["second_build_s"] / h["second_build_s"]
            row["ratio_first_process"] = g["first_process_s"] / h["first_process_s"]
            row["ratio_second_process"] = g["second_process_s"] / h["second_process_s"]
            results.append(row)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"Boot time, SQLite, fresh process per boot, median of up to {repeat} runs "
          "(build = create_app only; process = whole `python -c` incl. imports)")
    rows = []
    for r in results:
        g, h = r["generated"], r["handwritten"]
        rows.append([
            r["entities"], f"{g['runs_used']}/{h['runs_used']}",
            f"{g['first_build_s']:.2f}", f"{g['second_build_s']:.2f}",
            f"{h['first_build_s']:.2f}", f"{h['second_build_s']:.2f}",
            f"{r['ratio_first']:.2f}", f"{r['ratio_second']:.2f}",
            f"{g['first_process_s']:.2f}", f"{g['second_process_s']:.2f}",
            f"{h['first_process_s']:.2f}", f"{h['second_process_s']:.2f}",
        ])
    print(_common.table(
        ["N", "runs g/h", "gen 1st", "gen 2nd", "hand 1st", "hand 2nd", "ratio 1st", "ratio 2nd",
         "gen proc 1st", "gen proc 2nd", "hand proc 1st", "hand proc 2nd"], rows))
    print()
    print("Imports (untimed part of the process): generated "
          + ", ".join(f"N={r['entities']}: {r['generated']['imports_s']:.2f}s" for r in results)
          + "; hand-written " + ", ".join(f"N={r['entities']}: {r['handwritten']['imports_s']:.2f}s"
                                          for r in results))
    print("Sanity (generated / hand-written): "
          + "; ".join(f"N={r['entities']}: tables {r['generated']['tables']}/{r['handwritten']['tables']}, "
                      f"API routes {r['generated']['api_routes']}/{r['handwritten']['api_routes']}, "
                      f"permission-views {r['generated']['permission_views']}/"
                      f"{r['handwritten']['permission_views']}" for r in results))
    _common.print_load_note()
    print()
    goals = []
    for r in results:
        worst = max(r["ratio_first"], r["ratio_second"])
        goals.append([f"ratio generated/hand-written <= {GOAL_RATIO:.1f}", f"N={r['entities']}",
                      f"{worst:.2f} (worst of 1st/2nd)", _common.goal(worst <= GOAL_RATIO)])
    big = next((r for r in results if r["entities"] == 100), None)
    if big:
        for which in ("first", "second"):
            b = big["generated"][f"{which}_build_s"]
            p = big["generated"][f"{which}_process_s"]
            goals.append([f"100 entities boot < {GOAL_BOOT_100_S:.0f} s", f"{which} boot",
                          f"build {b:.2f}s / process {p:.2f}s", _common.goal(b < GOAL_BOOT_100_S)
                          + ("" if p < GOAL_BOOT_100_S else " (process incl. imports: MISSED)")])
    else:
        goals.append([f"100 entities boot < {GOAL_BOOT_100_S:.0f} s", "-", "not measured (no N=100)", "-"])
    print(_common.table(["goal", "case", "measured", "status"], goals))
    path = _common.write_results("startup-quick" if args.quick else "startup", {
        "args": vars(args), "sizes": sizes, "repeat": repeat,
        "goals": {"ratio_max": GOAL_RATIO, "boot_100_max_s": GOAL_BOOT_100_S},
        "results": results,
    })
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
