"""Gamma-Gamma spend model: published CDNOW figures and conditional spend."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from crm_lifecycle import gammagamma

PUBLISHED = {"p": 6.25, "q": 3.74, "v": 15.45}  # FHL "RFM and CLV" / Lifetimes README


@pytest.fixture(scope="module")
def gg_params(cdnow_with_transactions):
    w = cdnow_with_transactions
    return gammagamma.fit(w["x"], w["zbar"])


def test_fit_reproduces_published_cdnow_parameters(gg_params):
    fitted = {k: getattr(gg_params, k) for k in PUBLISHED}
    print("\nGamma-Gamma on CDNOW:", {k: round(v, 4) for k, v in fitted.items()}, "published", PUBLISHED)
    for name, want in PUBLISHED.items():
        assert fitted[name] == pytest.approx(want, rel=0.02), name
    assert gg_params.n == 946  # customers with repeat purchases
    assert gg_params.excluded == 0


def test_conditional_spend_shrinks_towards_the_population_mean(gg_params):
    pop = gg_params.population_mean_spend
    assert pop == pytest.approx(gg_params.p * gg_params.v / (gg_params.q - 1))
    assert gammagamma.expected_average_spend(gg_params, 0, 0) == pytest.approx(pop)
    few = gammagamma.expected_average_spend(gg_params, 1, 100.0)
    many = gammagamma.expected_average_spend(gg_params, 50, 100.0)
    assert pop < few < many < 100.0  # more purchases -> more weight on the customer's own mean
    low = gammagamma.expected_average_spend(gg_params, np.array([1, 50]), np.array([5.0, 5.0]))
    assert np.all(low > 5.0) and np.all(low < pop)


def test_analytic_gradient(cdnow_with_transactions):
    w = cdnow_with_transactions
    keep = w["x"] > 0
    args = (w["x"][keep], w["zbar"][keep])
    f = lambda th: gammagamma._individual_ll(th, *args).sum()  # noqa: E731
    g = lambda th: gammagamma._individual_ll(th, *args, with_grad=True)[1].sum(axis=1)  # noqa: E731
    theta = np.log([5.0, 3.0, 10.0])
    np.testing.assert_allclose(g(theta), optimize.approx_fprime(theta, f, 1e-6), rtol=1e-4, atol=1e-2)


def test_free_repeat_purchases_are_left_out_and_counted():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 6, 500).astype(float)
    zbar = rng.gamma(5.0, 6.0, 500)
    zbar[:3] = 0.0
    params = gammagamma.fit(x, zbar)
    assert params.n == 497 and params.excluded == 3
    with pytest.raises(ValueError):
        gammagamma.fit([0, 0, 1], [0, 0, 10])
