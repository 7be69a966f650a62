"""The trained churn model on disk: one pickle file per CRM (default ``<instance>/crm_lifecycle/churn_model.pkl``).

``crm lifecycle train`` writes it, ``crm lifecycle score`` reads it. The file holds the fitted
scikit-learn objects, so it is only read back by the same crm_lifecycle and scikit-learn
versions (otherwise: a clear "retrain" message). Only the CRM's own instance folder is read —
never load a model file from elsewhere (pickle runs code when loading).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sklearn

from . import __version__
from .errors import LifecycleError

__all__ = ["StoredModel", "save", "load", "DEFAULT_NAME"]

DEFAULT_NAME = "churn_model.pkl"


@dataclass
class StoredModel:
    model: object  # crm_lifecycle.churn.ChurnModel
    trained_at: datetime
    metrics: dict = field(default_factory=dict)
    plugin_version: str = __version__
    sklearn_version: str = sklearn.__version__


def save(path: str | Path, stored: StoredModel) -> Path:
    """Write atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(stored, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return path


def load(path: str | Path) -> StoredModel:
    path = Path(path)
    if not path.is_file():
        raise LifecycleError("还没有训练好的模型，请先运行 flask --app app crm lifecycle train",
                             "No trained model yet: run `flask --app app crm lifecycle train` first")
    try:
        with open(path, "rb") as fh:
            stored = pickle.load(fh)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: say so, retraining fixes it
        raise LifecycleError(f"模型文件 {path} 无法读取（{type(exc).__name__}），请重新训练",
                             f"The model file {path} cannot be read ({type(exc).__name__}); train again") from None
    if not isinstance(stored, StoredModel) or stored.sklearn_version != sklearn.__version__ \
            or stored.plugin_version != __version__:
        raise LifecycleError("模型是用其他版本训练的，请重新训练",
                             "The model was trained with another version of crm_lifecycle or scikit-learn; train again")
    return stored
