"""Lifecycle stage and risk band of a customer: plain rules on the churn risk, tenure and type.

In this order (the first rule that applies wins):

1. ``churned``  — the customer's type is ``churned`` (a fact, whatever the model says);
2. ``at_risk``  — churn risk >= ``AT_RISK`` (0.5);
3. ``new``      — never bought (no won opportunity and type ``prospect`` / ``intent``), or a
   customer for less than ``NEW_DAYS`` (90) days;
4. ``growing``  — a customer for less than ``GROWING_DAYS`` (365) days, or with an open
   opportunity at 40 % or more;
5. ``mature``   — everybody else.

Risk bands (dashboard): low < 0.3 <= medium < 0.5 <= high.
"""
from __future__ import annotations

import numpy as np

__all__ = ["STAGES", "AT_RISK", "lifecycle_stages", "risk_bands", "BANDS"]

STAGES = ("new", "growing", "mature", "at_risk", "churned")
AT_RISK = 0.5
MEDIUM_RISK = 0.3
NEW_DAYS = 90
GROWING_DAYS = 365
GROWING_PIPELINE_PROBABILITY = 40
CHURNED_TYPE = "churned"
NOT_YET_BOUGHT = ("prospect", "intent")
BANDS = ("low", "medium", "high")


def lifecycle_stages(customer_type, risk, tenure_days, won_deals, best_open_probability) -> np.ndarray:
    """The stage code of every customer (all arguments are arrays of the same length)."""
    customer_type = np.asarray(customer_type, dtype=object)
    risk = np.asarray(risk, dtype=float)
    tenure = np.nan_to_num(np.asarray(tenure_days, dtype=float), nan=0.0)
    won = np.nan_to_num(np.asarray(won_deals, dtype=float), nan=0.0)
    best = np.nan_to_num(np.asarray(best_open_probability, dtype=float), nan=0.0)
    never_bought = np.isin(customer_type, NOT_YET_BOUGHT) & (won == 0)
    return np.select(
        [customer_type == CHURNED_TYPE, risk >= AT_RISK, never_bought | (tenure < NEW_DAYS),
         (tenure < GROWING_DAYS) | (best >= GROWING_PIPELINE_PROBABILITY)],
        ["churned", "at_risk", "new", "growing"], default="mature").astype(object)


def risk_bands(risk) -> np.ndarray:
    risk = np.asarray(risk, dtype=float)
    return np.select([risk >= AT_RISK, risk >= MEDIUM_RISK], ["high", "medium"], default="low").astype(object)
