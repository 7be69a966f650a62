"""Train and score on the CRM's own data; every run is recorded as a ``prediction_run`` row.

* :func:`train` — features (:mod:`.features`) of the customers whose type is ``churned`` (1) or
  ``won`` (0, retained), stratified k-fold ROC AUC (k = 5, fewer when a class is small; on at most
  ``CV_MAX_ROWS`` customers), then the churn blend of :mod:`.churn` fitted on all of them and
  saved (:mod:`.model_store`).
* :func:`score` — every customer: churn risk, top-3 reasons (:mod:`.reasons`), lifecycle stage
  (:mod:`.stages`) and predicted value (:mod:`.value`), written in bulk (:mod:`.bulk`).
* :func:`train_and_score` — both, on one feature build (the nightly job).

No Flask here: the caller passes the SQLAlchemy session, the app's ``ModelSet`` and the model file.
A failure rolls back what the run wrote, records a ``failed`` run with its message, commits that,
and raises :class:`~crm_lifecycle.errors.LifecycleError`.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from crm_meta.services.dictionaries import Dictionaries

from . import __version__, bulk, churn, model_store, reasons, stages
from .errors import LifecycleError
from .features import FeatureTable, build_features
from .value import predict_value

__all__ = ["train", "score", "train_and_score", "RunReport", "TRAIN_UNITS", "SCORE_UNITS", "MIN_PER_CLASS"]

log = logging.getLogger("crm_lifecycle")

CHURNED = "churned"
RETAINED = ("won",)
MIN_PER_CLASS = 5  # churned and retained customers needed to train
CV_FOLDS = 5
CV_MAX_ROWS = 30_000  # cross-validate on a stratified sample of at most this many customers
CHUNK = 10_000  # customers scored and explained per step
TOP_REASONS = 3
MODEL_NAME = f"crm_lifecycle {__version__}: churn = logistic regression + gradient boosting (soft vote)"
VALUE_NAME = "value = BG/NBD + Gamma-Gamma on won opportunities"
#: progress units reported by train / score (a progress bar's length)
TRAIN_UNITS = 40
SCORE_UNITS = 60

Progress = Callable[[int, str], None]


@dataclass
class RunReport:
    """What a run did (also stored in ``prediction_run``)."""

    task: str
    run_id: int | None = None
    rows_trained: int = 0
    rows_scored: int = 0
    roc_auc_mean: float | None = None
    roc_auc_std: float | None = None
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)

    def summary(self) -> str:
        parts = []
        if self.rows_trained:
            auc = f", ROC AUC {self.roc_auc_mean:.3f} ± {self.roc_auc_std:.3f}" if self.roc_auc_mean is not None else ""
            parts.append(f"trained on {self.rows_trained} customers{auc}")
        if self.rows_scored:
            parts.append(f"scored {self.rows_scored} customers")
        return f"{'; '.join(parts)} in {self.seconds:.1f} s (run #{self.run_id})"


class _Units:
    """Reports progress units to the caller's callback (a no-op without one)."""

    def __init__(self, progress: Progress | None):
        self.progress = progress

    def __call__(self, units: int, label: str) -> None:
        if self.progress and units > 0:
            self.progress(units, label)


def _spread(progress: _Units, units: int, n: int, label: str) -> Callable[[int], None]:
    """``after(k)`` to call after chunk k of ``n``; together the calls report exactly ``units``."""
    done = [0]

    def after(k: int) -> None:
        target = round(units * (k + 1) / max(n, 1))
        progress(target - done[0], label)
        done[0] = target
    return after


def _features(session, models, as_of) -> tuple[FeatureTable, Dictionaries]:
    dicts = Dictionaries.load(session, models.system["dict_item"])
    table = build_features(session, models, dicts, as_of)
    if len(table) == 0:
        raise LifecycleError("没有客户数据", "There are no customers")
    return table, dicts


def _usable(table: FeatureTable, mask: np.ndarray) -> churn.FeatureSpec:
    """Features that vary among the training customers (a constant or empty column teaches nothing)."""
    cats, nums = [], []
    for name in table.categorical:
        col = table.columns[name][mask]
        if len({"" if v is None else str(v) for v in col}) > 1:
            cats.append(name)
    for name in table.numeric:
        col = table.columns[name][mask].astype(float)
        finite = col[np.isfinite(col)]
        if len(finite) and (np.nanmax(finite) > np.nanmin(finite) or len(finite) < len(col)):
            nums.append(name)
    if not cats and not nums:
        raise LifecycleError("所有特征在训练客户中都相同，无法训练", "Every feature has the same value for all "
                             "training customers; nothing to learn from")
    return churn.FeatureSpec(tuple(cats), tuple(nums))


def _sample(y: np.ndarray, max_rows: int, seed: int = 0) -> np.ndarray:
    """Indices of a stratified random sample of at most ``max_rows`` rows (all when fewer)."""
    if len(y) <= max_rows:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        k = max(1, round(max_rows * len(idx) / len(y)))
        keep.append(rng.choice(idx, k, replace=False))
    return np.sort(np.concatenate(keep))


def _fit(table: FeatureTable, progress: _Units) -> tuple[model_store.StoredModel, dict]:
    labelled = np.isin(table.customer_type, (CHURNED, *RETAINED))
    y = (table.customer_type[labelled] == CHURNED).astype(int)
    n_churned, n_retained = int(y.sum()), int(len(y) - y.sum())
    if n_churned < MIN_PER_CLASS or n_retained < MIN_PER_CLASS:
        raise LifecycleError(
            f"无法训练：至少需要 {MIN_PER_CLASS} 个流失客户（客户类型“流失客户”）和 {MIN_PER_CLASS} 个成交客户"
            f"（“成交客户”），现有 {n_churned} 个流失、{n_retained} 个成交",
            f"Cannot train: needs at least {MIN_PER_CLASS} churned customers (customer type 'churned') and "
            f"{MIN_PER_CLASS} retained ones (type 'won'); found {n_churned} churned and {n_retained} retained")
    spec = _usable(table, labelled)
    X = table.rows(labelled)
    folds = min(CV_FOLDS, n_churned, n_retained)
    sample = _sample(y, CV_MAX_ROWS)
    t = time.perf_counter()
    scores = churn.cross_validate_scores({k: v[sample] for k, v in X.items()}, y[sample], folds=folds, spec=spec)
    cv_s = time.perf_counter() - t
    progress(20, "cross-validation")
    t = time.perf_counter()
    model = churn.train(X, y, spec=spec)
    fit_s = time.perf_counter() - t
    progress(10, "training")
    metrics = {
        "roc_auc_mean": round(float(scores.mean()), 4), "roc_auc_std": round(float(scores.std()), 4),
        "roc_auc_folds": [round(float(s), 4) for s in scores], "folds": folds, "cv_rows": int(len(sample)),
        "n_churned": n_churned, "n_retained": n_retained, "churn_rate": round(n_churned / len(y), 4),
        "cv_s": round(cv_s, 2), "fit_s": round(fit_s, 2),
    }
    return model_store.StoredModel(model=model, trained_at=datetime.now(), metrics=metrics), metrics


def _score(session, models, dicts, table: FeatureTable, stored: model_store.StoredModel, progress: _Units,
           now: datetime) -> dict:
    model = stored.model
    absent = [f for f in model.features if f not in table.columns]
    if absent:
        raise LifecycleError(f"模型需要的特征已不存在（{', '.join(absent)}），请重新训练",
                             f"The model needs features that no longer exist ({', '.join(absent)}); train again")
    n = len(table)
    cols = {f: table.columns[f] for f in model.features}
    risk = np.empty(n)
    texts: list[str] = []
    n_chunks = (n + CHUNK - 1) // CHUNK
    t = time.perf_counter()
    after_score = _spread(progress, 10, n_chunks, "scoring")
    after_explain = _spread(progress, 30, n_chunks, "explaining")
    explain_s = 0.0
    for k, start in enumerate(range(0, n, CHUNK)):
        part = {f: c[start:start + CHUNK] for f, c in cols.items()}
        risk[start:start + CHUNK] = churn.score(model, part)
        after_score(k)
        t_e = time.perf_counter()
        contribs = churn.explain_many(model, part, top=TOP_REASONS)
        texts.extend(reasons.explanations(contribs, cols, start, dicts))
        explain_s += time.perf_counter() - t_e
        after_explain(k)
    score_s = time.perf_counter() - t - explain_s

    t = time.perf_counter()
    stage = stages.lifecycle_stages(table.customer_type, risk, table.columns["tenure_days"],
                                    table.columns.get("won_opportunities", np.zeros(n)),
                                    table.columns.get("max_open_probability", np.zeros(n)))
    value = predict_value(session, models, dicts, table.ids, risk, table.columns["tenure_days"], table.as_of)
    value_s = time.perf_counter() - t
    progress(5, "predicted value")

    t = time.perf_counter()
    after_write = _spread(progress, 10, (n + bulk.UPDATE_BATCH - 1) // bulk.UPDATE_BATCH, "writing")
    written = [0]

    def wrote(rows: int) -> None:
        after_write(written[0])
        written[0] += 1
    bulk.write_scores(session, models, table.ids, risk, list(stage), value.value, texts, now, progress=wrote)
    write_s = time.perf_counter() - t
    stage_counts = {s: int((stage == s).sum()) for s in stages.STAGES}
    bands = stages.risk_bands(risk)
    return {
        "rows_scored": n, "mean_churn_risk": round(float(risk.mean()), 4),
        "lifecycle_stages": stage_counts, "risk_bands": {b: int((bands == b).sum()) for b in stages.BANDS},
        "value_method": value.method, "value": value.metrics,
        "mean_predicted_value": round(float(np.mean(value.value)), 2),
        "score_s": round(score_s, 2), "explain_s": round(explain_s, 2), "value_s": round(value_s, 2),
        "write_s": round(write_s, 2),
    }


def _jsonable(value):
    """Metrics as strict JSON: NaN / infinity become null."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _record(session, models, task: str, status: str, started: datetime, seconds: float, *, model: str = "",
            rows_trained: int = 0, rows_scored: int = 0, roc_auc: float | None = None,
            features: tuple[str, ...] = (), metrics: dict | None = None, message: str = "") -> int:
    return bulk.insert_run(session, models, {
        "task": task, "status": status, "started_at": started, "duration_s": round(seconds, 2), "model": model[:200],
        "rows_trained": rows_trained, "rows_scored": rows_scored, "roc_auc": roc_auc,
        "features_used": ", ".join(features), "metrics": json.dumps(_jsonable(metrics or {}), ensure_ascii=False, sort_keys=True, allow_nan=False),
        "message": message,
    })


def _run(session, models, task: str, body) -> RunReport:
    """Run ``body() -> RunReport`` and record it; on failure record a failed run and raise LifecycleError."""
    started, t0 = datetime.now().replace(microsecond=0), time.perf_counter()
    try:
        report = body()
    except Exception as exc:  # noqa: BLE001 - recorded, then re-raised as a message for the admin
        session.rollback()
        err = exc if isinstance(exc, LifecycleError) else LifecycleError(
            f"运行失败：{type(exc).__name__}: {exc}", f"Run failed: {type(exc).__name__}: {exc}")
        log.info("crm_lifecycle %s failed: %s", task, err)
        log.debug("crm_lifecycle %s failed", task, exc_info=True)
        _record(session, models, task, "failed", started, time.perf_counter() - t0, model=MODEL_NAME,
                message=str(err))
        session.commit()
        raise err from (None if isinstance(exc, LifecycleError) else exc)
    report.seconds = time.perf_counter() - t0
    report.run_id = _record(
        session, models, task, "ok", started, report.seconds,
        model=MODEL_NAME + ("; " + VALUE_NAME if report.rows_scored else ""), rows_trained=report.rows_trained,
        rows_scored=report.rows_scored, roc_auc=report.roc_auc_mean,
        features=tuple(report.metrics.get("features", ())), metrics=report.metrics)
    session.commit()
    return report


def train(session, models, model_path: str | Path, progress: Progress | None = None,
          as_of: datetime | None = None) -> RunReport:
    """Train on churned vs. retained customers, cross-validate, save the model (``TRAIN_UNITS`` of progress)."""
    units = _Units(progress)

    def body() -> RunReport:
        table, _dicts = _features(session, models, as_of)
        units(5, "features")
        stored, metrics = _fit(table, units)
        model_store.save(model_path, stored)
        units(5, "saving")
        metrics = {**metrics, "features": list(stored.model.features), "feature_build_s":
                   round(sum(table.timings.values()), 2)}
        return RunReport("train", rows_trained=metrics["n_churned"] + metrics["n_retained"],
                         roc_auc_mean=metrics["roc_auc_mean"], roc_auc_std=metrics["roc_auc_std"], metrics=metrics)
    return _run(session, models, "train", body)


def score(session, models, model_path: str | Path, progress: Progress | None = None,
          as_of: datetime | None = None) -> RunReport:
    """Score every customer with the saved model (``SCORE_UNITS`` of progress)."""
    units = _Units(progress)

    def body() -> RunReport:
        stored = model_store.load(model_path)
        table, dicts = _features(session, models, as_of)
        units(5, "features")
        metrics = _score(session, models, dicts, table, stored, units, datetime.now().replace(microsecond=0))
        metrics = {**metrics, "features": list(stored.model.features), "model_trained_at":
                   stored.trained_at.isoformat(timespec="seconds"), "model_metrics": stored.metrics,
                   "feature_build_s": round(sum(table.timings.values()), 2)}
        return RunReport("score", rows_scored=metrics["rows_scored"], metrics=metrics)
    return _run(session, models, "score", body)


def train_and_score(session, models, model_path: str | Path, progress: Progress | None = None,
                    as_of: datetime | None = None) -> RunReport:
    """Train, save and score in one run on one feature build (``TRAIN_UNITS + SCORE_UNITS - 5``)."""
    units = _Units(progress)

    def body() -> RunReport:
        table, dicts = _features(session, models, as_of)
        units(5, "features")
        stored, metrics = _fit(table, units)
        model_store.save(model_path, stored)
        units(5, "saving")
        scored = _score(session, models, dicts, table, stored, units, datetime.now().replace(microsecond=0))
        metrics = {**metrics, **scored, "features": list(stored.model.features),
                   "feature_build_s": round(sum(table.timings.values()), 2)}
        return RunReport("train_score", rows_trained=metrics["n_churned"] + metrics["n_retained"],
                         rows_scored=scored["rows_scored"], roc_auc_mean=metrics["roc_auc_mean"],
                         roc_auc_std=metrics["roc_auc_std"], metrics=metrics)
    return _run(session, models, "train_score", body)
