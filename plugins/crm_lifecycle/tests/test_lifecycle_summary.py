"""Purchase log -> (x, t_x, T, zbar), on a hand-made log and on the raw CDNOW file."""

from __future__ import annotations

import numpy as np
import pytest

from crm_lifecycle import bgnbd, datasets, gammagamma, summary


def test_hand_made_log():
    s = summary.summarise_transactions(
        ["b", "a", "a", "a", "a", "c", "a"],
        ["2024-01-10", "2024-01-01", "2024-01-01", "2024-01-15", "2024-01-29", "2024-01-20", "2024-03-01"],
        [5.0, 10.0, 2.0, 30.0, 50.0, 7.0, 999.0],
        observation_end="2024-02-05",
    )
    assert list(s.customer) == ["a", "b", "c"]
    np.testing.assert_allclose(s.x, [2, 0, 0])  # same-day purchases merged, March ignored
    np.testing.assert_allclose(s.t_x, [4, 0, 0])  # weeks
    np.testing.assert_allclose(s.T, [5, 26 / 7, 16 / 7])
    np.testing.assert_allclose(s.zbar, [40, 0, 0])  # first purchase (10 + 2) left out
    assert str(s.first_purchase[0]) == "2024-01-01"


def test_cdnow_master_gives_a_cohort_like_the_published_sample(shared_data):
    log = datasets.load_cdnow_transactions(shared_data("cdnow", "CDNOW_master.txt"))
    assert len(log["customer_id"]) == 69_659
    s = summary.summarise_transactions(log["customer_id"], log["date"], log["amount"], observation_end="1997-09-30")
    assert len(s) == 23_570
    assert s.T.max() == pytest.approx(38.86, abs=0.01) and s.T.min() == pytest.approx(27.0, abs=0.01)
    # the published figures are for a 1/10 sample of this cohort: the full cohort lands near them
    p = bgnbd.fit(s.x, s.t_x, s.T)
    for k, want in {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}.items():
        assert getattr(p, k) == pytest.approx(want, rel=0.2), k
    g = gammagamma.fit(s.x, s.zbar)
    for k, want in {"p": 6.25, "q": 3.74, "v": 15.45}.items():
        assert getattr(g, k) == pytest.approx(want, rel=0.1), k
