"""Churn pipeline: scoring, explanations, input handling (Telco and synthetic CRM data).

The 5-fold ROC AUC on Telco is asserted in test_lifecycle_evaluate.py (through ``evaluate``).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from crm_lifecycle import churn, synthetic

HIGH_RISK = {
    "gender": "Female",
    "SeniorCitizen": "1",
    "Partner": "No",
    "Dependents": "No",
    "PhoneService": "Yes",
    "MultipleLines": "No",
    "InternetService": "Fiber optic",
    "OnlineSecurity": "No",
    "OnlineBackup": "No",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "tenure": 1.0,
    "MonthlyCharges": 75.0,
    "TotalCharges": 75.0,
}
LOYAL = dict(
    HIGH_RISK,
    SeniorCitizen="0",
    Partner="Yes",
    Dependents="Yes",
    InternetService="DSL",
    OnlineSecurity="Yes",
    TechSupport="Yes",
    Contract="Two year",
    PaperlessBilling="No",
    PaymentMethod="Bank transfer (automatic)",
    tenure=70.0,
    MonthlyCharges=60.0,
    TotalCharges=4200.0,
)


def test_telco_loader(telco):
    assert len(telco) == 7043
    assert int(telco.target.sum()) == 1869
    total = telco.columns["TotalCharges"]
    assert not np.isnan(total).any()
    blank = telco.columns["tenure"] == 0
    assert blank.sum() == 11 and np.all(total[blank] == 0.0)


def test_feature_types_are_inferred(telco, telco_model):
    assert telco_model.spec.numeric == ("tenure", "MonthlyCharges", "TotalCharges")
    assert "Contract" in telco_model.spec.categorical and len(telco_model.spec.categorical) == 16
    assert telco_model.n_train == 7043


def test_scores_are_probabilities_that_rank_churners(telco, telco_model):
    p = churn.score(telco_model, telco.columns)
    assert p.shape == (7043,) and np.all((p > 0) & (p < 1))
    assert roc_auc_score(telco.target, p) > 0.85  # in-sample, only a smoke check
    risky, loyal = churn.score(telco_model, [HIGH_RISK, LOYAL])
    assert risky > 0.6 and loyal < 0.05


def test_explain_names_the_features_that_drive_the_score(telco_model):
    reasons = churn.explain(telco_model, HIGH_RISK, top=3)
    print("\nhigh-risk customer:", [(r.feature, round(r.contribution, 3)) for r in reasons])
    assert len(reasons) == 3
    assert all(isinstance(r, churn.Contribution) for r in reasons)
    assert all(r.feature in telco_model.features for r in reasons)
    sizes = [abs(r.contribution) for r in reasons]
    assert sizes == sorted(sizes, reverse=True)
    assert {"tenure", "Contract", "InternetService"} & {r.feature for r in reasons}
    assert reasons[0].contribution > 0.05  # the main reason raises the risk
    safe = churn.explain(telco_model, LOYAL, top=19)
    assert len(safe) == 19 and {r.feature for r in safe} == set(telco_model.features)
    contract = next(r for r in safe if r.feature == "Contract")
    assert contract.contribution < 0  # a two-year contract lowers the risk


def test_fast_explanation_equals_the_brute_force_definition(telco, telco_model):
    rows = {k: v[:300] for k, v in telco.columns.items()}
    M = churn._matrix(rows, telco_model.spec)
    with churn._quiet_limits():
        base_fast, fast = churn._contributions(telco_model, M)
        base_slow, slow = churn._contributions_bruteforce(telco_model, M)
    np.testing.assert_allclose(base_fast, churn.score(telco_model, rows), atol=1e-12)
    np.testing.assert_allclose(base_fast, base_slow, atol=1e-12)
    np.testing.assert_allclose(fast, slow, atol=1e-10)


def test_explain_many_matches_explain(telco, telco_model):
    rows = {k: v[:50] for k, v in telco.columns.items()}
    many = churn.explain_many(telco_model, rows, top=3, chunk_rows=7)
    assert len(many) == 50
    for i in (0, 13, 49):
        one = churn.explain(telco_model, telco.row(i), top=3)
        assert [r.feature for r in one] == [r.feature for r in many[i]]
        np.testing.assert_allclose([r.contribution for r in one], [r.contribution for r in many[i]], atol=1e-12)


def test_missing_and_unseen_values_are_scored(telco_model):
    odd = dict(HIGH_RISK, PaymentMethod="Alipay", Contract=None, TotalCharges=None, tenure=float("nan"))
    (p,) = churn.score(telco_model, [odd])
    assert 0 < p < 1
    assert len(churn.explain(telco_model, odd)) == 3
    with pytest.raises(KeyError):
        churn.score(telco_model, [{"tenure": 3.0}])


def test_model_survives_pickling(telco, telco_model):
    clone = pickle.loads(pickle.dumps(telco_model))
    rows = {k: v[:100] for k, v in telco.columns.items()}
    np.testing.assert_array_equal(churn.score(clone, rows), churn.score(telco_model, rows))


def test_synthetic_crm_customers_signal_is_found():
    X, y = synthetic.crm_customers(6000, seed=3)
    assert len(X) == 16
    mean, std = churn.cross_validate_auc(X, y, folds=3)
    print(f"\nsynthetic CRM 3-fold AUC {mean:.3f} ± {std:.3f}")
    assert 0.7 < mean < 0.9 and std < 0.03
    model = churn.train(X, y)
    reasons = churn.explain_many(model, {k: v[:1000] for k, v in X.items()}, top=1)
    counts = {}
    for r in reasons:
        counts[r[0].feature] = counts.get(r[0].feature, 0) + 1
    ranked = sorted(counts, key=counts.get, reverse=True)
    assert ranked[0] in synthetic.CHURN_DRIVERS, counts
    assert sum(counts.get(f, 0) for f in synthetic.CHURN_DRIVERS) > 700, counts
    for noise in synthetic.NOISE_FEATURES:  # not in the generator's churn formula at all
        assert counts.get(noise, 0) <= 20, counts


def test_bad_targets_are_refused():
    X = {"a": np.arange(10.0), "b": np.array(list("xyxyxyxyxy"), dtype=object)}
    with pytest.raises(ValueError):
        churn.train(X, np.zeros(10))
    with pytest.raises(ValueError):
        churn.train(X, np.ones(9))
