"""BG/NBD: published CDNOW figures, closed-form forecasts, P(alive) behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, special

from crm_lifecycle import bgnbd, synthetic

# Fader, Hardie & Lee (2005), "Counting your customers the easy way", CDNOW 1/10 cohort
PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_LL = -9582.4


def test_fit_reproduces_published_cdnow_parameters(cdnow_params):
    fitted = {k: getattr(cdnow_params, k) for k in PUBLISHED}
    print("\nBG/NBD on CDNOW:", {k: round(v, 4) for k, v in fitted.items()}, "published", PUBLISHED)
    for name, want in PUBLISHED.items():
        assert fitted[name] == pytest.approx(want, rel=0.01), name
    assert cdnow_params.log_likelihood == pytest.approx(PUBLISHED_LL, abs=0.1)
    assert cdnow_params.n == 2357


def test_published_parameters_are_not_better_than_the_fit(cdnow_summary, cdnow_params):
    s = cdnow_summary
    published = bgnbd.BgNbdParams(**PUBLISHED)
    assert bgnbd.log_likelihood(published, s["frequency"], s["recency"], s["T"]) <= cdnow_params.log_likelihood + 1e-9


def test_conditional_expectation_matches_hardie_spreadsheet(cdnow_params):
    # FHL 2005 / Hardie's BG/NBD spreadsheet: x=2, t_x=30.43, T=38.86 -> 1.226 in the next 39 weeks
    assert bgnbd.expected_purchases(cdnow_params, 39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=1e-3)
    published = bgnbd.BgNbdParams(**PUBLISHED)
    assert bgnbd.expected_purchases(published, 39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=1e-3)


def test_population_expectation_matches_hardie_spreadsheet(cdnow_params):
    t = np.array([0.1429, 1.0, 3.0, 31.8571, 32.0, 78.0])
    want = np.array([0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576])
    np.testing.assert_allclose(bgnbd.expected_purchases_population(cdnow_params, t), want, atol=6e-4)


def test_no_repeat_purchase_means_alive():
    params = bgnbd.BgNbdParams(**PUBLISHED)
    assert bgnbd.p_alive(params, 0, 0, 38.86) == 1.0
    np.testing.assert_array_equal(bgnbd.p_alive(params, [0, 0], [0, 0], [1, 100]), [1.0, 1.0])


def test_more_recent_customers_are_more_likely_alive():
    params = bgnbd.BgNbdParams(**PUBLISHED)
    recency = np.linspace(1, 38, 20)
    alive = bgnbd.p_alive(params, 3, recency, 38.86)
    assert np.all(np.diff(alive) > 0)
    # a frequent buyer who has been silent for long is more likely gone than a rare one
    assert bgnbd.p_alive(params, 10, 5, 38.86) < bgnbd.p_alive(params, 1, 5, 38.86)
    grid = [(x, tx, T) for x in range(0, 60, 7) for T in (1, 10, 39, 100) for tx in (0, T / 3, T) if x or tx == 0]
    x, tx, T = map(np.array, zip(*grid))
    alive = bgnbd.p_alive(params, x, tx, T)
    assert np.all((alive >= 0) & (alive <= 1))


def test_expected_purchases_sanity(cdnow_params):
    p = cdnow_params
    assert bgnbd.expected_purchases(p, 0, 2, 30.43, 38.86) == pytest.approx(0.0, abs=1e-12)
    grows = bgnbd.expected_purchases(p, np.array([1, 10, 39, 100]), 2, 30.43, 38.86)
    assert np.all(np.diff(grows) > 0)
    # more recent -> more expected purchases; a new customer at T=0 is the population forecast
    assert bgnbd.expected_purchases(p, 39, 2, 35, 38.86) > bgnbd.expected_purchases(p, 39, 2, 10, 38.86)
    assert bgnbd.expected_purchases(p, 39, 0, 0, 0) == pytest.approx(bgnbd.expected_purchases_population(p, 39))


@pytest.mark.parametrize("x,t", [(0, 39), (2, 39), (40, 52), (150, 200)])
def test_euler_transformed_hypergeometric_equals_the_textbook_form(cdnow_params, x, t):
    p = cdnow_params
    z = t / (p.alpha + 38.86 + t)
    direct = (1 - z) ** (p.r + x) * special.hyp2f1(p.r + x, p.b + x, p.a + p.b + x - 1, z)
    assert bgnbd._hyp_term(p, x, z) == pytest.approx(direct, rel=1e-9)


def test_analytic_gradient(cdnow_summary):
    s = cdnow_summary
    args = (s["frequency"], s["recency"], s["T"])
    f = lambda th: bgnbd._individual_ll(th, *args).sum()  # noqa: E731
    g = lambda th: bgnbd._individual_ll(th, *args, with_grad=True)[1].sum(axis=1)  # noqa: E731
    for theta in (np.log([0.3, 4.0, 0.8, 2.5]), np.log([1.0, 1.0, 1.0, 1.0])):
        num = optimize.approx_fprime(theta, f, 1e-6)
        np.testing.assert_allclose(g(theta), num, rtol=1e-4, atol=1e-2)


def test_weights_count_customers(cdnow_summary, cdnow_params):
    s = cdnow_summary
    doubled = bgnbd.fit(s["frequency"], s["recency"], s["T"], weights=np.full(len(s["T"]), 2.0))
    for k in PUBLISHED:
        assert getattr(doubled, k) == pytest.approx(getattr(cdnow_params, k), rel=1e-5)
    assert doubled.log_likelihood == pytest.approx(2 * cdnow_params.log_likelihood, rel=1e-9)


def test_fit_recovers_simulated_parameters():
    true = {"r": 0.5, "alpha": 5.0, "a": 0.8, "b": 2.5}
    x, t_x, T = synthetic.bgnbd_summaries(30_000, **true, T_max=52, seed=7)
    fitted = bgnbd.fit(x, t_x, T)
    assert fitted.r == pytest.approx(true["r"], rel=0.1)
    assert fitted.alpha == pytest.approx(true["alpha"], rel=0.1)
    assert fitted.a == pytest.approx(true["a"], rel=0.25)
    assert fitted.b == pytest.approx(true["b"], rel=0.25)


@pytest.mark.parametrize(
    "x,t_x,T",
    [([1], [5], [4]), ([-1], [0], [4]), ([0], [2], [4]), ([1.5], [1], [4]), ([np.nan], [1], [4]), ([], [], [])],
)
def test_inconsistent_summaries_are_refused(x, t_x, T):
    with pytest.raises(ValueError):
        bgnbd.fit(x, t_x, T)
