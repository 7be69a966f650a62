"""``flask --app app crm lifecycle train | score | evaluate`` (contributed by ``crm_cli_commands``).

Every failure ends with a one-line message in Chinese and English and exit status 1, no traceback.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model_store and pipeline import scikit-learn and SciPy (~0.9 s): imported when a
    from . import pipeline  # command runs, not each time the CRM starts
from .errors import LifecycleError

__all__ = ["lifecycle", "model_path"]


def model_path() -> Path:
    """Where this app keeps its model: ``CRM_LIFECYCLE_MODEL_PATH`` (config key or environment
    variable), else ``<instance>/crm_lifecycle/churn_model.pkl``."""
    configured = current_app.config.get("CRM_LIFECYCLE_MODEL_PATH") or os.environ.get("CRM_LIFECYCLE_MODEL_PATH")
    from .model_store import DEFAULT_NAME

    return Path(configured) if configured else Path(current_app.instance_path) / "crm_lifecycle" / DEFAULT_NAME


def _run(task, units: int, label: str) -> pipeline.RunReport:
    """Run ``task(session, models, path, progress)`` with a progress bar (drawn on a terminal only)."""
    build = current_app.extensions["crm"]
    try:
        with click.progressbar(length=units, label=label, show_eta=False, show_percent=True,
                               item_show_func=lambda step: step) as bar:
            return task(build.db.session, build.models, model_path(), progress=bar.update)
    except LifecycleError as exc:
        raise click.ClickException(str(exc)) from None


def _echo_report(report: pipeline.RunReport) -> None:
    m = report.metrics
    if report.rows_trained:
        click.echo(f"训练完成 Trained: {report.rows_trained} customers ({m['n_churned']} churned, "
                   f"{m['n_retained']} retained), {m['folds']}-fold ROC AUC "
                   f"{report.roc_auc_mean:.4f} ± {report.roc_auc_std:.4f} on {m['cv_rows']} customers")
    if report.rows_scored:
        stages = ", ".join(f"{k} {v}" for k, v in m["lifecycle_stages"].items())
        click.echo(f"评分完成 Scored: {report.rows_scored} customers — {stages}; value: {m['value_method']}")
    click.echo(f"用时 Took {report.seconds:.1f} s — prediction_run #{report.run_id}")


@click.group("lifecycle")
def lifecycle() -> None:
    """客户生命周期预测 Customer lifecycle prediction: train, score, evaluate on public data."""


@lifecycle.command("train")
@with_appcontext
def train_command() -> None:
    """Train the churn model on churned vs. retained (won) customers and save it."""
    from . import pipeline

    _echo_report(_run(pipeline.train, pipeline.TRAIN_UNITS, "训练 Training"))


@lifecycle.command("score")
@with_appcontext
def score_command() -> None:
    """Score every customer with the saved model: risk, reasons, stage, predicted value."""
    from . import pipeline

    _echo_report(_run(pipeline.score, pipeline.SCORE_UNITS, "评分 Scoring"))


@lifecycle.command("evaluate")
@click.option("--dataset", required=True, type=click.Choice(["telco", "cdnow"]),
              help="telco: 5-fold ROC AUC of the churn model; cdnow: BG/NBD (+ Gamma-Gamma) parameters.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2, 20), help="Folds (telco).")
@click.argument("path", type=click.Path())
def evaluate_command(dataset: str, folds: int, path: str) -> None:
    """Run the plugin's model code on a public data set (see ../shared/data) and print JSON."""
    from .evaluate import evaluate

    try:
        result = evaluate(dataset, path, folds=folds)
    except FileNotFoundError as exc:
        raise click.ClickException(f"找不到数据 Data not found: {exc}") from None
    except (ValueError, KeyError, OSError, csv.Error) as exc:
        raise click.ClickException(f"数据无法读取 Cannot read the {dataset} data at {path}: "
                                   f"{type(exc).__name__}: {exc}") from None
    click.echo(json.dumps(result, indent=2))
