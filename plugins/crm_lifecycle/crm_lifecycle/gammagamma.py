"""Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005, "RFM and CLV";
Fader & Hardie note 025, "The Gamma-Gamma Model of Monetary Value").

A customer's individual transaction values are Gamma(p, nu) around her mean ``p / nu``, and
``nu ~ Gamma(q, v)`` across customers.  For a customer with ``x`` transactions of average value
``zbar`` the likelihood of the average is

    f(zbar | p, q, v; x) = Gamma(p x + q) / (Gamma(p x) Gamma(q))
                           * v^q zbar^(p x - 1) x^(p x) / (v + x zbar)^(p x + q)

The model is fitted on customers with repeat purchases only (``x > 0``; the first purchase is
left out of ``zbar``, as in the CDNOW cohort file).  The conditional expectation of a
customer's mean spend is a weighted average of the population mean ``p v / (q - 1)`` and her
own ``zbar``:

    E[M | x, zbar] = p (v + x zbar) / (p x + q - 1)

It assumes that spend is independent of the purchase process (check the correlation of
frequency and zbar in your data before multiplying it with BG/NBD forecasts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special

__all__ = ["GammaGammaParams", "fit", "log_likelihood", "expected_average_spend"]


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    v: float
    log_likelihood: float = float("nan")
    #: number of customers (with x > 0) the parameters were fitted on
    n: float = 0.0
    #: customers with repeat purchases left out because their average spend is not positive
    excluded: float = 0.0

    @property
    def population_mean_spend(self) -> float:
        """Mean spend per transaction of a randomly chosen customer, p v / (q - 1) (q > 1)."""
        return self.p * self.v / (self.q - 1.0) if self.q > 1.0 else float("inf")

    def as_dict(self) -> dict:
        return asdict(self)


def _repeaters(x, zbar, weights=None):
    x = np.asarray(x, dtype=float).ravel()
    zbar = np.asarray(zbar, dtype=float).ravel()
    if x.shape != zbar.shape:
        raise ValueError("frequency and average spend must have the same length")
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.shape != x.shape or np.any(w < 0):
        raise ValueError("weights must be non-negative, one per customer row")
    # a Gamma model has no room for free purchases: repeaters whose average is 0 (or missing)
    # are left out and counted
    keep = (x > 0) & np.isfinite(zbar) & (zbar > 0)
    excluded = float(np.sum(w[(x > 0) & ~keep]))
    return x[keep], zbar[keep], w[keep], excluded


def _individual_ll(theta, x, zbar, with_grad=False):
    p, q, v = np.exp(theta)
    px = p * x
    log_vxz = np.log(v + x * zbar)
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(v)
        + (px - 1.0) * np.log(zbar)
        + px * np.log(x)
        - (px + q) * log_vxz
    )
    if not with_grad:
        return ll
    psi_pxq = special.digamma(px + q)
    d_p = x * (psi_pxq - special.digamma(px) + np.log(zbar) + np.log(x) - log_vxz)
    d_q = psi_pxq - special.digamma(q) + np.log(v) - log_vxz
    d_v = q / v - (px + q) / (v + x * zbar)
    return ll, np.stack([d_p * p, d_q * q, d_v * v])


def log_likelihood(params: GammaGammaParams, x, zbar, weights=None) -> float:
    x, zbar, w, _ = _repeaters(x, zbar, weights)
    return float(np.dot(w, _individual_ll(np.log([params.p, params.q, params.v]), x, zbar)))


def fit(frequency, average_spend, weights=None, *, starts=None, maxiter: int = 2000) -> GammaGammaParams:
    """Maximum-likelihood (p, q, v) from customers with ``frequency > 0``.

    Rows with ``frequency == 0`` are ignored (their ``average_spend`` may be 0 or missing), and
    so are repeaters with a non-positive or missing average (counted in ``excluded``).
    """
    x, zbar, w, excluded = _repeaters(frequency, average_spend, weights)
    if x.size < 3 or w.sum() <= 0:
        raise ValueError("the Gamma-Gamma model needs customers with repeat purchases")
    total = w.sum()

    def objective(theta):
        ll, grad = _individual_ll(theta, x, zbar, with_grad=True)
        return -np.dot(w, ll) / total, -(grad @ w) / total

    if starts is None:
        m = float(np.average(zbar, weights=w))
        starts = [(1.0, 1.0, 1.0), (2.0, 3.0, m), (5.0, 5.0, m)]
    best = None
    for start in starts:
        res = optimize.minimize(
            objective,
            np.log(np.asarray(start, dtype=float)),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-15.0, 15.0)] * 3,
            options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-10},
        )
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is None:
        raise RuntimeError("Gamma-Gamma fit failed: the likelihood is not finite at any start")
    p, q, v = np.exp(best.x)
    return GammaGammaParams(
        p=float(p),
        q=float(q),
        v=float(v),
        log_likelihood=float(-best.fun * total),
        n=float(total),
        excluded=excluded,
    )


def expected_average_spend(params: GammaGammaParams, x, zbar):
    """E[mean spend per transaction | x, zbar]; the population mean for ``x == 0``."""
    x = np.asarray(x, dtype=float)
    zbar = np.nan_to_num(np.asarray(zbar, dtype=float))
    x, zbar = np.broadcast_arrays(x, zbar)
    p, q, v = params.p, params.q, params.v
    out = p * (v + x * np.where(x > 0, zbar, 0.0)) / (p * x + q - 1.0)
    return out if out.ndim else float(out)
