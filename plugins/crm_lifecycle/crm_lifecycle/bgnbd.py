"""BG/NBD purchase model (Fader, Hardie & Lee 2005, "Counting your customers the easy way").

Each customer is summarised by three numbers, in one time unit (weeks for CDNOW, days or weeks
in the CRM -- any unit, as long as it is the same for all three and for ``t`` in forecasts):

``x`` (frequency)
    number of *repeat* purchases (all purchases minus the first one);
``t_x`` (recency)
    time from the first purchase to the last one (0 when ``x == 0``);
``T`` (age)
    time from the first purchase to the end of the observation period.

While alive, a customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)``; after
every purchase she drops out with probability ``p ~ Beta(a, b)``.  The individual likelihood
(FHL 2005, eq. 6) is

    L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+T)^(r+x))
      + [x > 0] B(a+1, b+x-1)/B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+t_x)^(r+x))

evaluated here in log space (``gammaln`` + ``logaddexp``) for all customers at once.  The
maximum-likelihood fit works on log-parameters with L-BFGS-B and the analytic gradient.

Forecasts use the closed forms of the paper; the Gaussian hypergeometric function is evaluated
after Euler's transformation, ``(1-z)^(r+x) 2F1(r+x, b+x; a+b+x-1; z) =
(1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)``, whose first two parameters stay small however many
purchases a customer made (the "#NUM!" problem of Fader & Hardie's note 027).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special

__all__ = [
    "BgNbdParams",
    "fit",
    "log_likelihood",
    "p_alive",
    "expected_purchases",
    "expected_purchases_population",
]


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float
    #: total log-likelihood at the optimum (same constant terms as the paper: -9582.4 on CDNOW)
    log_likelihood: float = float("nan")
    #: number of customers (sum of weights) the parameters were fitted on
    n: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _arrays(x, t_x, T):
    x = np.asarray(x, dtype=float)
    t_x = np.asarray(t_x, dtype=float)
    T = np.asarray(T, dtype=float)
    x, t_x, T = np.broadcast_arrays(x, t_x, T)
    return x, t_x, T


def validate_summary(x, t_x, T) -> None:
    """Raise ``ValueError`` when a (frequency, recency, T) summary is not consistent."""
    x, t_x, T = _arrays(x, t_x, T)
    if x.size == 0:
        raise ValueError("no customers")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t_x)) and np.all(np.isfinite(T))):
        raise ValueError("frequency, recency and T must be finite numbers")
    if np.any(x < 0) or np.any(np.abs(x - np.round(x)) > 1e-9):
        raise ValueError("frequency must be a non-negative whole number of repeat purchases")
    if np.any(t_x < 0) or np.any(t_x > T * (1 + 1e-9) + 1e-12):
        raise ValueError("recency must satisfy 0 <= recency <= T")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError("recency must be 0 for customers without repeat purchases")


def _individual_ll(theta, x, t_x, T, with_grad=False):
    """Per-customer log-likelihood at log-parameters ``theta``; optionally d ll / d theta."""
    r, alpha, a, b = np.exp(theta)
    rx = r + x
    has = x > 0
    log_a1 = -rx * np.log(alpha + T)
    bx1 = np.where(has, b + x - 1.0, 1.0)
    log_a2 = np.where(has, np.log(a) - np.log(bx1) - rx * np.log(alpha + t_x), -np.inf)
    log_sum = np.logaddexp(log_a1, log_a2)
    ll = (
        special.gammaln(rx)
        - special.gammaln(r)
        + r * np.log(alpha)
        + special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
        + log_sum
    )
    if not with_grad:
        return ll
    s1 = np.exp(log_a1 - log_sum)  # share of the "still alive at T" term
    s2 = np.exp(log_a2 - log_sum)  # share of the "dropped out after t_x" term (0 when x == 0)
    d_r = (
        special.digamma(rx)
        - special.digamma(r)
        + np.log(alpha)
        - s1 * np.log(alpha + T)
        - s2 * np.log(alpha + t_x)
    )
    d_alpha = r / alpha - s1 * rx / (alpha + T) - s2 * rx / (alpha + t_x)
    d_a = special.digamma(a + b) - special.digamma(a + b + x) + s2 / a
    d_b = (
        special.digamma(a + b)
        + special.digamma(b + x)
        - special.digamma(b)
        - special.digamma(a + b + x)
        - s2 / bx1
    )
    # chain rule for the log-parameterisation: d/d(log p) = p * d/dp
    grad = np.stack([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
    return ll, grad


def log_likelihood(params: BgNbdParams, x, t_x, T, weights=None) -> float:
    """Total log-likelihood of ``params`` on the summaries (weights = customers per row)."""
    x, t_x, T = _arrays(x, t_x, T)
    theta = np.log([params.r, params.alpha, params.a, params.b])
    ll = _individual_ll(theta, x, t_x, T)
    w = np.ones_like(ll) if weights is None else np.asarray(weights, dtype=float)
    return float(np.sum(w * ll))


def fit(frequency, recency, T, weights=None, *, starts=None, maxiter: int = 2000) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters for the customer summaries.

    ``weights`` (optional) counts how many customers share a row, so that large customer bases
    can be fitted on their distinct (x, t_x, T) triples.  Several starting points are tried
    (log-parameters) and the best optimum is kept; the objective is the mean negative
    log-likelihood, so the tolerances do not depend on the number of customers.
    """
    x, t_x, T = _arrays(frequency, recency, T)
    x, t_x, T = x.ravel(), t_x.ravel(), T.ravel()
    validate_summary(x, t_x, T)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.shape != x.shape or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be non-negative, one per customer row, not all zero")
    total = w.sum()
    # identical (x, t_x, T) rows -- common with whole-day times -- are evaluated once
    rows, inverse = np.unique(np.column_stack([x, t_x, T]), axis=0, return_inverse=True)
    if len(rows) < 0.9 * len(x):
        w = np.bincount(inverse.ravel(), weights=w, minlength=len(rows))
        x, t_x, T = rows[:, 0], rows[:, 1], rows[:, 2]

    def objective(theta):
        ll, grad = _individual_ll(theta, x, t_x, T, with_grad=True)
        return -np.dot(w, ll) / total, -(grad @ w) / total

    if starts is None:
        # r and a/b near 1; alpha on the scale of the observation period
        scale = float(np.mean(T)) or 1.0
        starts = [
            (1.0, 1.0, 1.0, 1.0),
            (0.5, 0.1 * scale, 1.0, 2.0),
            (1.0, scale, 0.5, 0.5),
        ]
    best = None
    for i, start in enumerate(starts):
        res = optimize.minimize(
            objective,
            np.log(np.asarray(start, dtype=float)),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-15.0, 15.0)] * 4,
            options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-9},
        )
        if not np.isfinite(res.fun):
            continue
        if best is not None and i >= 1 and abs(res.fun - best.fun) < 1e-9 * abs(best.fun):
            best = res if res.fun < best.fun else best
            break  # two starts agree: the optimum is found, skip the others
        if best is None or res.fun < best.fun:
            best = res
    if best is None:
        raise RuntimeError("BG/NBD fit failed: the likelihood is not finite at any start")
    r, alpha, a, b = np.exp(best.x)
    return BgNbdParams(
        r=float(r),
        alpha=float(alpha),
        a=float(a),
        b=float(b),
        log_likelihood=float(-best.fun * total),
        n=float(total),
    )


def p_alive(params: BgNbdParams, x, t_x, T):
    """P(customer still alive at T | x, t_x, T) (FHL 2005 / Fader-Hardie note 008).

    Customers without repeat purchases cannot have dropped out (drop-out happens only right
    after a purchase), so their probability is exactly 1.
    """
    x, t_x, T = _arrays(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    has = x > 0
    bx1 = np.where(has, b + x - 1.0, 1.0)
    log_odds_dead = np.log(a) - np.log(bx1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    out = np.where(has, special.expit(-log_odds_dead), 1.0)
    return out if out.ndim else float(out)


def _hyp_term(params: BgNbdParams, x, z):
    """(1-z)^(r+x) * 2F1(r+x, b+x; a+b+x-1; z) via Euler's transformation."""
    r, a, b = params.r, params.a, params.b
    return (1.0 - z) ** (a - 1.0) * special.hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)


def _a_minus_1(a: float) -> float:
    # The closed forms divide by (a - 1); at a == 1 they have a removable singularity.
    return a - 1.0 if abs(a - 1.0) > 1e-9 else 1e-9


def expected_purchases(params: BgNbdParams, t, x, t_x, T):
    """E[number of purchases in (T, T + t] | x, t_x, T] (FHL 2005, eq. 10)."""
    x, t_x, T = _arrays(x, t_x, T)
    t = np.asarray(t, dtype=float)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = t / (alpha + T + t)
    numerator = (a + b + x - 1.0) / _a_minus_1(a) * (1.0 - _hyp_term(params, x, z))
    has = x > 0
    bx1 = np.where(has, b + x - 1.0, 1.0)
    odds_dead = np.where(
        has, np.exp(np.log(a) - np.log(bx1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))), 0.0
    )
    out = numerator / (1.0 + odds_dead)
    return out if out.ndim else float(out)


def expected_purchases_population(params: BgNbdParams, t):
    """E[X(t)]: expected repeat purchases of a new customer in her first ``t`` (FHL 2005, eq. 9)."""
    t = np.asarray(t, dtype=float)
    a, b = params.a, params.b
    z = t / (params.alpha + t)
    out = (a + b - 1.0) / _a_minus_1(a) * (1.0 - _hyp_term(params, 0.0, z))
    return out if out.ndim else float(out)
