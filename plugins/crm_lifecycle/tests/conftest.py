"""Test setup for the crm_lifecycle plugin.

* Puts the plugin root on ``sys.path`` so the tests run from a checkout without installing the
  package (``cd <repo> && .venv/bin/python -m pytest -q plugins/crm_lifecycle/tests``).
* ``shared_data(*parts)`` finds the public data at ``<repo root>/../shared/data`` and FAILS
  (never skips) with a clear message when a file is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PLUGIN_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PLUGIN_ROOT.parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

if str(PLUGIN_ROOT) not in sys.path:
    sys.path.insert(0, str(PLUGIN_ROOT))


def _shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"public test data missing: {path}\n"
            f"The crm_lifecycle tests read shared/data beside the repository "
            f"(expected {SHARED_DATA}); see shared/data/README.md.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def shared_data():
    return _shared_data


@pytest.fixture(scope="session")
def telco(shared_data):
    from crm_lifecycle import datasets

    return datasets.load_telco(shared_data("telco_churn", "Telco-Customer-Churn.csv"))


@pytest.fixture(scope="session")
def telco_model(telco):
    from crm_lifecycle import churn

    return churn.train(telco.columns, telco.target)


@pytest.fixture(scope="session")
def cdnow_summary(shared_data):
    from crm_lifecycle import datasets

    return datasets.load_cdnow_summary(shared_data("cdnow", "cdnow_customers_summary.csv"))


@pytest.fixture(scope="session")
def cdnow_with_transactions(shared_data):
    from crm_lifecycle import datasets

    return datasets.load_cdnow_with_transactions(
        shared_data("cdnow", "cdnow_customers_summary_with_transactions.csv")
    )


@pytest.fixture(scope="session")
def cdnow_params(cdnow_summary):
    from crm_lifecycle import bgnbd

    s = cdnow_summary
    return bgnbd.fit(s["frequency"], s["recency"], s["T"])
