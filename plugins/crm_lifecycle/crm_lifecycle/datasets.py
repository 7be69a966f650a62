"""Loaders for the public data the models are measured on (``shared/data`` of the project).

Everything is returned as plain numpy columns, the same shape of input the CRM side builds
from its own tables:

* :func:`load_telco` -- IBM "Telco Customer Churn" (7,043 customers, ``Churn`` Yes/No).
* :func:`load_cdnow_summary` -- CDNOW cohort ``ID,frequency,recency,T`` (weeks).
* :func:`load_cdnow_with_transactions` -- the same cohort ``ID,x,t_x,T,zbar``.
* :func:`load_cdnow_transactions` -- the raw ``CDNOW_master.txt`` purchase log.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ChurnData",
    "TELCO_CATEGORICAL",
    "TELCO_NUMERIC",
    "load_telco",
    "load_cdnow_summary",
    "load_cdnow_with_transactions",
    "load_cdnow_transactions",
]

TELCO_CATEGORICAL = (
    "gender",
    "SeniorCitizen",
    "Partner",
    "Dependents",
    "PhoneService",
    "MultipleLines",
    "InternetService",
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
)
TELCO_NUMERIC = ("tenure", "MonthlyCharges", "TotalCharges")


@dataclass
class ChurnData:
    """Feature columns (name -> 1-D array; str = categorical, float = numeric) and 0/1 target."""

    columns: dict[str, np.ndarray]
    target: np.ndarray
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.target)

    def row(self, i: int) -> dict:
        """One customer as a ``{feature: value}`` dict (the input of ``churn.explain``)."""
        return {name: col[i] for name, col in self.columns.items()}


def _require(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return path


def load_telco(path) -> ChurnData:
    """Read ``Telco-Customer-Churn.csv``.

    ``TotalCharges`` is blank for 11 customers, all with ``tenure == 0`` (signed up, not billed
    yet); their total is 0.0, which is what it is, rather than a guess or a dropped row.  Any
    other blank numeric value is kept as NaN (the churn pipeline imputes it).
    ``SeniorCitizen`` (0/1) is read as a category like the other yes/no columns.
    """
    path = _require(path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = [c for c in (*TELCO_CATEGORICAL, *TELCO_NUMERIC, "Churn") if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    columns: dict[str, np.ndarray] = {}
    for name in TELCO_CATEGORICAL:
        columns[name] = np.array([r[name].strip() for r in rows], dtype=object)
    for name in TELCO_NUMERIC:
        values = []
        for r in rows:
            text = r[name].strip()
            if text:
                values.append(float(text))
            elif name == "TotalCharges" and float(r["tenure"] or "nan") == 0:
                values.append(0.0)
            else:
                values.append(np.nan)
        columns[name] = np.array(values, dtype=float)
    labels = {r["Churn"].strip() for r in rows}
    if not labels <= {"Yes", "No"}:
        raise ValueError(f"{path}: Churn must be Yes/No, found {sorted(labels)}")
    target = np.array([r["Churn"].strip() == "Yes" for r in rows], dtype=int)
    return ChurnData(columns=columns, target=target, ids=[r["customerID"] for r in rows])


def _read_numeric_csv(path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    path = _require(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        rows = [r for r in reader if r]
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (has {header})")
    data = np.array(rows, dtype=float)
    return {name: data[:, header.index(name)] for name in header}


def load_cdnow_summary(path) -> dict[str, np.ndarray]:
    """``cdnow_customers_summary.csv`` -> {"ID", "frequency", "recency", "T"} (weeks)."""
    return _read_numeric_csv(path, ("frequency", "recency", "T"))


def load_cdnow_with_transactions(path) -> dict[str, np.ndarray]:
    """``cdnow_customers_summary_with_transactions.csv`` -> {"ID", "x", "t_x", "T", "zbar"}."""
    return _read_numeric_csv(path, ("x", "t_x", "T", "zbar"))


def load_cdnow_transactions(path) -> dict[str, np.ndarray]:
    """``CDNOW_master.txt`` (customer id, YYYYMMDD, CDs, dollars; whitespace-separated) ->
    {"customer_id": int, "date": datetime64[D], "quantity": float, "amount": float}."""
    path = _require(path)
    ids, dates, qty, amount = [], [], [], []
    with path.open(encoding="ascii") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) != 4 or not parts[0].isdigit():
                continue  # header or blank line
            ids.append(int(parts[0]))
            d = parts[1]
            dates.append(f"{d[:4]}-{d[4:6]}-{d[6:]}")
            qty.append(float(parts[2]))
            amount.append(float(parts[3]))
    return {
        "customer_id": np.array(ids, dtype=np.int64),
        "date": np.array(dates, dtype="datetime64[D]"),
        "quantity": np.array(qty, dtype=float),
        "amount": np.array(amount, dtype=float),
    }
