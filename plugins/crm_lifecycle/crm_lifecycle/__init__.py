"""crm_lifecycle: customer lifecycle prediction for crm_meta.

The plugin (hooks in :mod:`crm_lifecycle.plugin`; features, pipeline, stages, reasons, value,
bulk writes, commands and the dashboard widget in modules of their own) uses the model modules,
which need no web or database imports:

* :mod:`crm_lifecycle.churn` -- churn classifier, cross-validation, scores, per-customer reasons
* :mod:`crm_lifecycle.bgnbd` -- BG/NBD: P(alive) and expected purchases
* :mod:`crm_lifecycle.gammagamma` -- Gamma-Gamma: expected spend per purchase
* :mod:`crm_lifecycle.summary` -- purchase log -> (x, t_x, T, zbar)
* :mod:`crm_lifecycle.datasets` / :mod:`crm_lifecycle.evaluate` -- the public benchmarks
"""

__version__ = "0.1.0"
