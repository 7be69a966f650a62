"""Lifecycle plugin at scale: train + score on 100,000 generated CRM customers with their history.

1. **load** (not timed against the goal): ``create_app`` with the ``crm_lifecycle`` plugin on an
   empty SQLite file, then 100,000 customers with ~1,000,000 follow-ups, ~200,000 opportunities
   and some demands and feedback bulk-inserted with ``executemany`` (``crm_lifecycle.sample_crm``,
   not through the record service), then ANALYZE;
2. **plugin** — what ``flask --app app crm lifecycle train`` and then ``… score`` do, in a fresh
   process: features (five GROUP BY queries), stratified 5-fold cross-validation on at most
   30,000 customers, fit on every churned/won customer, save; then score, top-3 reasons,
   lifecycle stage and BG/NBD + Gamma-Gamma value for every customer, bulk UPDATE, two
   ``prediction_run`` rows. Wall time of train + score and the process's peak RSS;
3. **baseline**, in another fresh process on the same database: the raw feature SQL alone
   (``build_features``) and the same scikit-learn blend fitted on a plain numpy matrix of the same
   training rows, plus ``predict_proba`` on every customer — no cross-validation, reasons,
   value model or writes.

Each phase runs in its own process so that its peak RSS (``getrusage``) is its own.

    .venv/bin/python bench/lifecycle.py              # 100,000 customers (~2 min, ~1 min of it loading)
    .venv/bin/python bench/lifecycle.py --quick      # 10,000 customers, ~20 s

Goals (issue 6): train + score < 60 s and < 2 GB. Results: printed table +
bench/results/lifecycle.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

GOAL_SECONDS = 60.0
GOAL_MB = 2048.0
PLUGIN = "crm_lifecycle"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _app(work: Path):
    from crm_meta.testing import make_app

    return make_app(work, plugins=[PLUGIN])


# -- phases (each in its own process) ------------------------------------------------------------

def phase_load(work: Path, customers: int) -> dict:
    from sqlalchemy import text

    from crm_lifecycle.sample_crm import load_sample_crm

    t = time.perf_counter()
    app = _app(work)
    boot = time.perf_counter() - t
    with app.app_context():
        build = app.extensions["crm"]
        session = build.db.session
        t = time.perf_counter()
        made = load_sample_crm(session.connection(), build.models, customers=customers, owner_ids=[1], seed=2024)
        session.commit()
        load_s = time.perf_counter() - t
        session.execute(text("ANALYZE"))
        session.commit()
    return {"create_app_s": round(boot, 2), "load_s": round(load_s, 2), "rows": made.counts,
            "peak_rss_mb": round(_peak_mb(), 1)}


def phase_plugin(work: Path) -> dict:
    from crm_lifecycle import pipeline

    app = _app(work)
    model_path = work / "model" / "churn_model.pkl"
    with app.app_context():
        build = app.extensions["crm"]
        rss_boot = _peak_mb()
        t = time.perf_counter()
        trained = pipeline.train(build.db.session, build.models, model_path)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        scored = pipeline.score(build.db.session, build.models, model_path)
        score_s = time.perf_counter() - t
    m = {**trained.metrics, **scored.metrics}
    return {
        "train_s": round(train_s, 2), "score_s": round(score_s, 2), "train_plus_score_s": round(train_s + score_s, 2),
        "peak_rss_mb": round(_peak_mb(), 1), "rss_after_boot_mb": round(rss_boot, 1),
        "rows_trained": trained.rows_trained, "rows_scored": scored.rows_scored,
        "roc_auc_mean": trained.roc_auc_mean, "roc_auc_std": trained.roc_auc_std, "cv_rows": m["cv_rows"],
        "steps_s": {k: m[k] for k in ("feature_build_s", "cv_s", "fit_s", "score_s", "explain_s", "value_s",
                                       "write_s") if k in m},
        "value_method": m["value_method"], "lifecycle_stages": m["lifecycle_stages"],
    }


def phase_baseline(work: Path) -> dict:
    import numpy as np

    from crm_lifecycle import churn
    from crm_lifecycle.features import build_features
    from crm_meta.services.dictionaries import Dictionaries

    app = _app(work)
    with app.app_context():
        build = app.extensions["crm"]
        session = build.db.session
        t = time.perf_counter()
        table = build_features(session, build.models, Dictionaries.load(session, build.models.system["dict_item"]))
        sql_s = time.perf_counter() - t
    labelled = np.isin(table.customer_type, ("churned", "won"))
    y = (table.customer_type[labelled] == "churned").astype(int)
    spec = churn.FeatureSpec(table.categorical, table.numeric)
    M_all = churn._matrix(table.columns, spec)  # the plain object matrix the pipeline is fitted on
    M = M_all[labelled]
    t = time.perf_counter()
    with churn._quiet_limits():
        est = churn.build_estimator(spec).fit(M, y)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    with churn._quiet_limits():
        est.predict_proba(M_all)
    predict_s = time.perf_counter() - t
    return {"feature_sql_s": round(sql_s, 2), "fit_s": round(fit_s, 2), "predict_s": round(predict_s, 2),
            "total_s": round(sql_s + fit_s + predict_s, 2), "peak_rss_mb": round(_peak_mb(), 1),
            "rows": int(len(table)), "rows_trained": int(len(y))}


PHASES = {"load": phase_load, "plugin": phase_plugin, "baseline": phase_baseline}


def _child(phase: str, work: Path, customers: int) -> dict:
    cmd = [_common.python(), __file__, "--phase", phase, "--workdir", str(work), "--customers", str(customers)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_common.clean_env(), cwd=_common.ROOT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"phase {phase} failed (exit {proc.returncode})")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = round(wall, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 10,000 customers")
    ap.add_argument("--customers", type=int, default=None, help="generated customers (default 100,000)")
    ap.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help="keep the SQLite file and model (prints where)")
    args = ap.parse_args(argv)
    customers = args.customers or (10_000 if args.quick else 100_000)

    if args.phase:  # a child process: one phase, its figures as the last line of stdout
        work = Path(args.workdir)
        result = phase_load(work, customers) if args.phase == "load" else PHASES[args.phase](work)
        print(json.dumps(result))
        return 0

    work = Path(tempfile.mkdtemp(prefix="crm-bench-lifecycle-"))
    try:
        load = _child("load", work, customers)
        plugin = _child("plugin", work, customers)
        base = _child("baseline", work, customers)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = load["rows"]
    print()
    print(f"{customers:,} generated customers on SQLite: " + ", ".join(f"{v:,} {k}" for k, v in rows.items())
          + f" — bulk-loaded in {load['load_s']:.1f} s (create_app {load['create_app_s']:.2f} s)")
    print(_common.table(["what", "wall s", "peak RSS MB", "notes"], [
        ["plugin: train (CLI `lifecycle train`)", plugin["train_s"], "-",
         f"{plugin['rows_trained']:,} churned/won, 5-fold AUC {plugin['roc_auc_mean']:.3f} ± "
         f"{plugin['roc_auc_std']:.3f} on {plugin['cv_rows']:,}"],
        ["plugin: score (CLI `lifecycle score`)", plugin["score_s"], "-",
         f"{plugin['rows_scored']:,} customers, top-3 reasons, value: {plugin['value_method']}"],
        ["plugin: train + score", plugin["train_plus_score_s"], plugin["peak_rss_mb"],
         f"process incl. app boot ({plugin['rss_after_boot_mb']:.0f} MB after boot)"],
        ["baseline: feature SQL alone", base["feature_sql_s"], "-", "five GROUP BY queries → columns"],
        ["baseline: same sklearn blend on numpy", base["fit_s"] + base["predict_s"], "-",
         f"fit {base['fit_s']:.1f} s on {base['rows_trained']:,} rows + predict_proba {base['predict_s']:.1f} s"],
        ["baseline: total", base["total_s"], base["peak_rss_mb"], "no CV, reasons, value model or writes"],
    ]))
    print("plugin steps (s): " + ", ".join(f"{k} {v}" for k, v in plugin["steps_s"].items()))
    print()
    ok_time, ok_mem = plugin["train_plus_score_s"] < GOAL_SECONDS, plugin["peak_rss_mb"] < GOAL_MB
    print(_common.table(["goal", "measured", "status"], [
        [f"train + score < {GOAL_SECONDS:.0f} s", f"{plugin['train_plus_score_s']:.1f} s "
         f"({plugin['train_plus_score_s'] / base['total_s']:.1f}x baseline)", _common.goal(ok_time)],
        [f"peak memory < {GOAL_MB:.0f} MB", f"{plugin['peak_rss_mb']:.0f} MB", _common.goal(ok_mem)],
    ]))
    _common.print_load_note()
    path = _common.write_results("lifecycle-quick" if args.quick else "lifecycle", {
        "customers": customers, "goals": {"seconds": GOAL_SECONDS, "memory_mb": GOAL_MB},
        "threads": os.environ.get("CRM_LIFECYCLE_THREADS", "1"), "load": load, "plugin": plugin, "baseline": base,
    })
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
