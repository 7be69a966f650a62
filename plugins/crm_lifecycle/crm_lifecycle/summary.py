"""From a purchase log to the (x, t_x, T, zbar) summaries of the BG/NBD and Gamma-Gamma models.

The CRM side passes one row per purchase (customer key, date, amount) -- e.g. won
opportunities or orders -- and the end of the observation period.  Conventions (those of
Fader, Hardie & Lee and of the CDNOW cohort files):

* purchases of one customer on the same day count as one purchase (amounts are added up);
* ``x`` = number of purchase days after the first one; ``t_x`` = first to last purchase day;
  ``T`` = first purchase day to ``observation_end``; all in ``unit_days`` (7 = weeks);
* ``zbar`` = mean amount of the repeat purchases (the first purchase is left out, as in the
  CDNOW file); 0 for customers without repeat purchases;
* purchases after ``observation_end`` are ignored (calibration period).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RfmSummary", "summarise_transactions"]


@dataclass
class RfmSummary:
    customer: np.ndarray  # the distinct customer keys, sorted
    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    zbar: np.ndarray
    first_purchase: np.ndarray  # datetime64[D]

    def __len__(self) -> int:
        return len(self.customer)


def summarise_transactions(customer, date, amount=None, *, observation_end, unit_days: float = 7.0) -> RfmSummary:
    customer = np.asarray(customer)
    date = np.asarray(date, dtype="datetime64[D]")
    amount = np.zeros(len(customer)) if amount is None else np.asarray(amount, dtype=float)
    if not (len(customer) == len(date) == len(amount)):
        raise ValueError("customer, date and amount must have the same length")
    if np.isnat(date).any():
        raise ValueError("every purchase needs a date")
    end = np.datetime64(observation_end, "D")
    keep = date <= end
    customer, date, amount = customer[keep], date[keep], np.nan_to_num(amount[keep])
    if len(customer) == 0:
        raise ValueError("no purchases on or before the end of the observation period")

    # one row per (customer, day), amounts summed
    keys, cust_idx = np.unique(customer, return_inverse=True)
    day = date.astype(np.int64)
    order = np.lexsort((day, cust_idx))
    cust_idx, day, amount = cust_idx[order], day[order], amount[order]
    new_day = np.ones(len(day), dtype=bool)
    new_day[1:] = (cust_idx[1:] != cust_idx[:-1]) | (day[1:] != day[:-1])
    group = np.cumsum(new_day) - 1
    day_amount = np.bincount(group, weights=amount)
    day_cust = cust_idx[new_day]
    day_day = day[new_day]

    n = len(keys)
    first = np.full(n, np.iinfo(np.int64).max)
    last = np.full(n, np.iinfo(np.int64).min)
    np.minimum.at(first, day_cust, day_day)
    np.maximum.at(last, day_cust, day_day)
    days_count = np.bincount(day_cust, minlength=n)
    total = np.bincount(day_cust, weights=day_amount, minlength=n)
    # amount of the first purchase day of every customer (the first row of each customer)
    first_row = np.ones(len(day_cust), dtype=bool)
    first_row[1:] = day_cust[1:] != day_cust[:-1]
    first_amount = np.zeros(n)
    first_amount[day_cust[first_row]] = day_amount[first_row]

    x = (days_count - 1).astype(float)
    repeat_total = total - first_amount
    zbar = np.divide(repeat_total, x, out=np.zeros(n), where=x > 0)
    end_day = end.astype(np.int64)
    return RfmSummary(
        customer=keys,
        x=x,
        t_x=(last - first) / unit_days,
        T=(end_day - first) / unit_days,
        zbar=zbar,
        first_purchase=first.astype("datetime64[D]"),
    )
