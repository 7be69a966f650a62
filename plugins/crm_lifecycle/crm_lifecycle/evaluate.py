"""Run the plugin's model code on public data and return its figures.

    python -m crm_lifecycle.evaluate telco shared/data/telco_churn/Telco-Customer-Churn.csv
    python -m crm_lifecycle.evaluate cdnow shared/data/cdnow/cdnow_customers_summary.csv

``telco`` -> {"dataset", "rows", "folds", "roc_auc_mean", "roc_auc_std", "roc_auc_folds",
"churn_rate", "seconds"}: stratified, shuffled (random_state=1) k-fold ROC AUC of the churn
pipeline of :mod:`crm_lifecycle.churn`.

``cdnow`` -> {"dataset", "rows", "r", "alpha", "a", "b", "log_likelihood", ...} from the BG/NBD fit
of the ``ID,frequency,recency,T`` file, plus {"p", "q", "v", "repeat_customers"} from the
Gamma-Gamma fit when ``cdnow_customers_summary_with_transactions.csv`` (``ID,x,t_x,T,zbar``) is
given or lies beside it.  PATH may also be that file itself or the ``cdnow`` folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import bgnbd, churn, datasets, gammagamma

__all__ = ["evaluate", "DATASETS"]

DATASETS = ("telco", "cdnow")
CDNOW_SUMMARY = "cdnow_customers_summary.csv"
CDNOW_WITH_TRANSACTIONS = "cdnow_customers_summary_with_transactions.csv"


def _evaluate_telco(path: Path, folds: int) -> dict:
    data = datasets.load_telco(path)
    t0 = time.perf_counter()
    scores = churn.cross_validate_scores(data.columns, data.target, folds=folds)
    return {
        "dataset": "telco",
        "rows": len(data),
        "folds": folds,
        "roc_auc_mean": round(float(scores.mean()), 4),
        "roc_auc_std": round(float(scores.std()), 4),
        "roc_auc_folds": [round(float(s), 4) for s in scores],
        "churn_rate": round(float(data.target.mean()), 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _cdnow_files(path: Path) -> tuple[Path | None, Path | None]:
    """(frequency/recency/T summary, x/t_x/T/zbar file) for a file or folder PATH."""
    if path.is_dir():
        summary, with_tx = path / CDNOW_SUMMARY, path / CDNOW_WITH_TRANSACTIONS
        return (summary if summary.is_file() else None, with_tx if with_tx.is_file() else None)
    if path.name == CDNOW_WITH_TRANSACTIONS:
        return None, path
    sibling = path.with_name(CDNOW_WITH_TRANSACTIONS)
    return path, (sibling if sibling.is_file() else None)


def _evaluate_cdnow(path: Path) -> dict:
    summary_path, with_tx_path = _cdnow_files(path)
    if summary_path is None and with_tx_path is None:
        raise FileNotFoundError(f"no CDNOW summary at {path}")
    if summary_path is not None:
        s = datasets.load_cdnow_summary(summary_path)
        x, t_x, T = s["frequency"], s["recency"], s["T"]
    else:
        s = datasets.load_cdnow_with_transactions(with_tx_path)
        x, t_x, T = s["x"], s["t_x"], s["T"]
    t0 = time.perf_counter()
    params = bgnbd.fit(x, t_x, T)
    out = {
        "dataset": "cdnow",
        "rows": int(len(x)),
        "r": round(params.r, 4),
        "alpha": round(params.alpha, 4),
        "a": round(params.a, 4),
        "b": round(params.b, 4),
        "log_likelihood": round(params.log_likelihood, 2),
    }
    if with_tx_path is not None:
        w = datasets.load_cdnow_with_transactions(with_tx_path)
        gg = gammagamma.fit(w["x"], w["zbar"])
        out.update(
            {
                "p": round(gg.p, 4),
                "q": round(gg.q, 4),
                "v": round(gg.v, 4),
                "repeat_customers": int(gg.n),
                "mean_spend_per_purchase": round(gg.population_mean_spend, 2),
            }
        )
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def evaluate(dataset: str, path, folds: int = 5) -> dict:
    """Figures of the plugin's models on a public data set (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{dataset} data not found: {path}")
    if dataset == "telco":
        return _evaluate_telco(path, folds)
    if dataset == "cdnow":
        return _evaluate_cdnow(path)
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crm_lifecycle.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("path")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.dataset, args.path, folds=args.folds)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
