"""Cadence changes on a big CRM: `followups.recompute_cadence` (ONE UPDATE per grade) over 1,000,000
customers, what `crm remind` pays for checking cadence changes first, and the set-based
`followups.backfill` beside the row-by-row one it replaced.

For SQLite and/or PostgreSQL (a throwaway server from tests/pgserver.py) this script

1. builds the app and loads ``--customers`` customers as bench/process.py does (grades A/B/C/none
   3:4:2:1), then one follow-up for every second customer (INSERT … SELECT) and ANALYZE;
2. **remind**: ``flask crm remind --no-notify`` through the CLI runner, 5 times, and
   ``followups.apply_cadence_changes`` alone when nothing changed (what remind now runs first);
3. **recompute**: grade A's ``cadence_days`` 7 → 5, then ``recompute_cadence(grade="A")`` + commit
   (what the data-dictionary screen would run; the loaded due dates are random, so every A row
   changes), again with nothing left to change, then every grade; then A back to 7 and
   ``crm remind``, which applies it;
4. **backfill**: last/next follow-up and the late flags cleared, then the set-based backfill and
   the row-by-row one of the previous release (``followups.py`` before the commit that removed its ``_bulk``),
   each from that same state (rolled back after), after VACUUM ANALYZE / ANALYZE.

    .venv/bin/python bench/cadence.py                   # 1,000,000 customers, both DBs
    .venv/bin/python bench/cadence.py --quick           # 20,000 customers
    .venv/bin/python bench/cadence.py --db sqlite --customers 200000 --no-old-backfill

Results: printed + bench/results/cadence.json (``cadence-quick.json`` for --quick).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

processbench = importlib.import_module("process")
listbench = importlib.import_module("list")
policybench = importlib.import_module("policy")

REPEAT = 5


def old_followups():
    """The followups module of the last commit with the row-by-row backfill (the parent of the commit
    that removed its ``_bulk`` helper), or None outside git."""
    path = "crm_meta/services/followups.py"
    try:
        git = lambda *a: subprocess.run(["git", *a], cwd=_common.ROOT, capture_output=True, text=True,  # noqa: E731
                                        check=True).stdout.strip()
        removed = git("log", "-1", "--format=%H", "-S", "def _bulk(session", "--", path)
        src = git("show", f"{removed}^:{path}" if removed else f"HEAD:{path}")
    except (OSError, subprocess.CalledProcessError):
        return None
    if "def _bulk(session" not in src:
        return None
    work = Path(tempfile.mkdtemp(prefix="crm-bench-oldfollowups-")) / "old_followups.py"
    work.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_followups", work)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_followups"] = module
    spec.loader.exec_module(module)
    return module


def timed(fn):
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def load(app, people, customers: int) -> dict:
    from sqlalchemy import text

    b = app.extensions["crm"]
    reg = b.models.registry
    with app.app_context():
        entity, table = reg.entity("customer"), b.models.model("customer").__table__
        link = b.models.link_tables.get(("customer", "tags"))
        codes = [i.code for i in reg.dictionary(entity.field("tags").dictionary).items]
        out = listbench.bulk_load(b.db.engine, processbench.CustomerRows(entity, table, reg, people, customers),
                                  link, codes)
        t = time.perf_counter()
        with b.db.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO follow_up (version, record_no, customer_id, followed_at, method, content, owner_id, "
                "department, created_at, updated_at) SELECT 1, 'G' || CAST(id AS VARCHAR), id, last_follow_up_at, "
                "'phone', '电话沟通', owner_id, department, last_follow_up_at, last_follow_up_at FROM customer "
                "WHERE id % 2 = 0"))
            conn.execute(text("ANALYZE"))
        out["follow_ups_s"] = time.perf_counter() - t
        b.db.session.remove()
    return out


def vacuum(engine) -> None:
    """Fresh statistics (and, on PostgreSQL, no dead rows) before a measurement."""
    from sqlalchemy import text

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))


def bench_backend(backend: str, url: str, args, work: Path) -> dict:
    from sqlalchemy import text

    from crm_meta.services import clock, followups
    from crm_meta.web.factory import create_app

    out: dict = {"backend": backend, "customers": args.customers}
    app = create_app(policybench.app_config(url, work, _common.ROOT / "schemas", plugins=False))
    with app.app_context():
        people = policybench.make_people(app, 0.01, 0.3)
    print(f"[{backend}] loading {args.customers:,} customers and a follow-up for every second one ...", flush=True)
    out["load"] = load(app, people, args.customers)
    b = app.extensions["crm"]
    engine = policybench.engine_of(app)
    with engine.connect() as conn:
        out["grades"] = {str(k): v for k, v in conn.execute(text(
            "SELECT coalesce(grade, '-'), count(*) FROM customer GROUP BY grade")).all()}
    with clock.frozen(processbench.NOW, stamps=False):
        # 1. remind on bench/process.py's data: the cadence check first costs two small SELECTs
        processbench.timed_cli(app, ["crm", "remind", "--no-notify"])  # the first run records the cadences
        with app.app_context():
            s = b.db.session
            check = [timed(lambda: followups.apply_cadence_changes(s, b.models))[0] for _ in range(REPEAT)]
            s.commit()
        remind = [processbench.timed_cli(app, ["crm", "remind", "--no-notify"])[0] for _ in range(REPEAT)]
        out["steady"] = {"apply_cadence_changes_s": check, "remind_s": remind}
        print(f"[{backend}] steady: cadence check median {statistics.median(check) * 1000:.2f} ms; crm remind "
              f"median {statistics.median(remind):.3f}s", flush=True)

        # 2. an admin changes grade A's cadence
        with app.app_context():
            s = b.db.session
            items = b.models.system["dict_item"]

            def set_a(days):
                s.execute(items.update().where(items.c.dictionary == "grade", items.c.code == "A")
                          .values(attrs={"cadence_days": days, "color": "#c0392b"}))
                s.commit()

            vacuum(engine)
            set_a(5)
            t_a, n_a = timed(lambda: (followups.recompute_cadence(s, b.models, "A"), s.commit())[0])
            t_same, n_same = timed(lambda: (followups.recompute_cadence(s, b.models, "A"), s.commit())[0])
            t_all, n_all = timed(lambda: (followups.recompute_cadence(s, b.models), s.commit())[0])
            set_a(7)
        vacuum(engine)
        t_remind_change, output = processbench.timed_cli(app, ["crm", "remind", "--no-notify"])
        out["recompute"] = {"grade_A_s": t_a, "grade_A_rows": n_a, "grade_A_again_s": t_same,
                            "grade_A_again_rows": n_same, "all_grades_s": t_all, "all_grades_rows": n_all,
                            "remind_after_change_s": t_remind_change, "remind_after_change_output": output.strip()}
        print(f"[{backend}] recompute A (7→5): {t_a:.2f}s, {n_a:,} rows; again: {t_same:.2f}s, {n_same} rows; "
              f"all grades: {t_all:.2f}s, {n_all} rows; crm remind applying A 5→7: {t_remind_change:.2f}s "
              f"({output.strip().splitlines()[0]})", flush=True)

        # 3. backfill from the same state (last/next/late cleared), row by row vs set-based
        with engine.begin() as conn:
            conn.execute(text("UPDATE customer SET next_follow_up_at = NULL, last_follow_up_at = NULL"))
            conn.execute(text("UPDATE follow_up SET late = NULL"))
        old = None if args.no_old_backfill else old_followups()
        runs = [("set-based", followups)] + ([("row by row", old)] if old is not None else [])
        out["backfill"] = {}
        for name, module in runs:
            vacuum(engine)
            with app.app_context():
                s = b.db.session
                elapsed, counts = timed(lambda: module.backfill(s, b.models))
                s.rollback()
            out["backfill"][name] = {"s": elapsed, "counts": counts}
            print(f"[{backend}] backfill {name}: {elapsed:.2f}s {counts}", flush=True)
    with app.app_context():
        b.db.session.remove()
        b.db.engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,000 customers")
    ap.add_argument("--customers", type=int, default=None, help="customers (default 1,000,000)")
    ap.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    ap.add_argument("--no-old-backfill", action="store_true", help="skip the row-by-row backfill")
    args = ap.parse_args(argv)
    args.customers = args.customers or (20_000 if args.quick else 1_000_000)
    results = _common.per_database(args.db, "cadence",
                                   lambda backend, new_url, work: bench_backend(backend, new_url("main"), args, work))
    path = _common.write_results("cadence-quick" if args.quick else "cadence", {"args": vars(args),
                                                                               "results": results})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
