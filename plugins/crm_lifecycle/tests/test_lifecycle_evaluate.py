"""``evaluate(dataset, path)`` -- the figures the CLI prints -- against the published baselines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crm_lifecycle import evaluate as ev

PLUGIN_ROOT = Path(__file__).resolve().parents[1]


def test_telco_cross_validated_auc(shared_data):
    out = ev.evaluate("telco", shared_data("telco_churn", "Telco-Customer-Churn.csv"))
    print(
        f"\nTelco 5-fold ROC AUC {out['roc_auc_mean']:.4f} ± {out['roc_auc_std']:.4f} "
        f"(folds {out['roc_auc_folds']}; published LR baseline 0.841 ± 0.008) in {out['seconds']} s"
    )
    assert out["rows"] == 7043 and out["folds"] == 5 and len(out["roc_auc_folds"]) == 5
    assert out["roc_auc_mean"] >= 0.84
    assert out["roc_auc_std"] < 0.03


def test_cdnow_parameters(shared_data):
    out = ev.evaluate("cdnow", shared_data("cdnow", "cdnow_customers_summary.csv"))
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for k, want in published.items():
        assert out[k] == pytest.approx(want, rel=0.01), k
    for k, want in {"p": 6.25, "q": 3.74, "v": 15.45}.items():  # from the file beside it
        assert out[k] == pytest.approx(want, rel=0.02), k
    assert out["rows"] == 2357 and out["repeat_customers"] == 946
    folder = ev.evaluate("cdnow", shared_data("cdnow"))
    assert {k: folder[k] for k in published} == {k: out[k] for k in published}


def test_cdnow_with_transactions_file_alone(shared_data):
    out = ev.evaluate("cdnow", shared_data("cdnow", "cdnow_customers_summary_with_transactions.csv"))
    assert out["r"] == pytest.approx(0.243, rel=0.01) and out["p"] == pytest.approx(6.25, rel=0.02)


def test_module_prints_json(shared_data):
    proc = subprocess.run(
        [sys.executable, "-m", "crm_lifecycle.evaluate", "cdnow", str(shared_data("cdnow", "cdnow_customers_summary.csv"))],
        cwd=PLUGIN_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= {"r", "alpha", "a", "b", "p", "q", "v"}


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        ev.evaluate("iris", tmp_path)
    with pytest.raises(FileNotFoundError):
        ev.evaluate("telco", tmp_path / "nope.csv")
    assert ev.main(["telco", str(tmp_path / "nope.csv")]) == 2
