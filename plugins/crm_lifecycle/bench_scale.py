"""Scale benchmark: the lifecycle models on 100,000 generated CRM customers.

    .venv/bin/python plugins/crm_lifecycle/bench_scale.py [--customers 100000] [--seed 0]

Times training and scoring of the churn model on seeded synthetic customers (16 features, see
``crm_lifecycle.synthetic``), the top-3 explanations of every customer, and the BG/NBD +
Gamma-Gamma fit and forecasts on as many simulated purchase histories; reports the peak
resident memory of the process (``resource.getrusage``).  Goal (issue): train + score under
60 s and under 2 GB.  Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout without install

import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from crm_lifecycle import bgnbd, churn, gammagamma, synthetic  # noqa: E402

GOAL_SECONDS = 60.0
GOAL_MEMORY_MB = 2048.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-explain", action="store_true", help="skip explaining every customer")
    args = ap.parse_args(argv)
    n = args.customers
    fig: dict = {"customers": n}

    t = time.perf_counter()
    X, y = synthetic.crm_customers(n, seed=args.seed)
    fig["generate_s"] = round(time.perf_counter() - t, 2)
    fig["features"] = len(X)
    fig["churn_rate"] = round(float(y.mean()), 3)
    # a hold-out of the same generator, to show the model learned something real
    X_new, y_new = synthetic.crm_customers(20_000, seed=args.seed + 1)

    t = time.perf_counter()
    model = churn.train(X, y)
    fig["train_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    scores = churn.score(model, X)
    fig["score_s"] = round(time.perf_counter() - t, 2)
    fig["train_plus_score_s"] = round(fig["train_s"] + fig["score_s"], 2)
    fig["holdout_roc_auc"] = round(float(roc_auc_score(y_new, churn.score(model, X_new))), 4)
    fig["train_roc_auc"] = round(float(roc_auc_score(y, scores)), 4)

    if not args.no_explain:
        t = time.perf_counter()
        reasons = churn.explain_many(model, X, top=3)
        fig["explain_all_s"] = round(time.perf_counter() - t, 2)
        top1 = {}
        for r in reasons:
            top1[r[0].feature] = top1.get(r[0].feature, 0) + 1
        fig["most_frequent_top_reason"] = sorted(top1.items(), key=lambda kv: -kv[1])[:4]

    true = dict(r=0.25, alpha=4.0, a=0.8, b=2.5)
    t = time.perf_counter()
    x, t_x, T = synthetic.bgnbd_summaries(n, **true, seed=args.seed)
    fig["simulate_purchases_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    params = bgnbd.fit(x, t_x, T)
    alive = bgnbd.p_alive(params, x, t_x, T)
    expected = bgnbd.expected_purchases(params, 52.0, x, t_x, T)
    rng = np.random.default_rng(args.seed)
    zbar = np.where(x > 0, rng.gamma(6.0, 35.0 / 6.0, n), 0.0)
    gg = gammagamma.fit(x, zbar)
    spend = gammagamma.expected_average_spend(gg, x, zbar)
    fig["bgnbd_gg_fit_and_forecast_s"] = round(time.perf_counter() - t, 2)
    fig["bgnbd_true"] = true
    fig["bgnbd_fitted"] = {k: round(getattr(params, k), 4) for k in ("r", "alpha", "a", "b")}
    fig["mean_p_alive"] = round(float(alive.mean()), 4)
    fig["mean_expected_purchases_52w"] = round(float(expected.mean()), 4)
    fig["mean_expected_spend"] = round(float(spend.mean()), 2)

    fig["all_models_s"] = round(
        fig["train_plus_score_s"] + fig.get("explain_all_s", 0.0) + fig["bgnbd_gg_fit_and_forecast_s"], 2
    )
    fig["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(fig, ensure_ascii=False, indent=2))
    ok = fig["train_plus_score_s"] < GOAL_SECONDS and fig["peak_rss_mb"] < GOAL_MEMORY_MB
    print(
        f"train+score {fig['train_plus_score_s']:.1f} s (goal < {GOAL_SECONDS:.0f} s), "
        f"peak memory {fig['peak_rss_mb']:.0f} MB (goal < {GOAL_MEMORY_MB:.0f} MB): {'OK' if ok else 'MISSED'}; "
        f"with explanations and BG/NBD + Gamma-Gamma {fig['all_models_s']:.1f} s"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
