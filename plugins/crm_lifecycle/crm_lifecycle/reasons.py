"""The human-readable risk explanation stored on each customer (``risk_explanation``), in Chinese and English.

Input: the top contributions of :func:`crm_lifecycle.churn.explain_many` — for each feature, how
many probability points the customer's own value moves her churn risk compared with a typical
customer (the feature replaced by its training distribution; the whole LR + boosting blend, not
coefficient x standardised value, see ``churn``'s docstring). Output, one line per customer:

    "102 天未跟进 No follow-up for 102 days (+0.21); 近一年 2 次投诉 2 complaints in 12 months (+0.12); …"
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

__all__ = ["describe", "explanation", "explanations", "CATEGORY_DICTIONARIES"]

#: categorical feature -> (dictionary of its codes, zh caption, en caption)
CATEGORY_DICTIONARIES = {
    "grade": ("grade", "客户等级", "Grade"),
    "industry": ("industry", "行业", "Industry"),
    "region": ("region", "区域", "Region"),
    "size": ("company_size", "企业规模", "Company size"),
    "source": ("source", "客户来源", "Source"),
}


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _count(zh: str, en_one: str, en_many: str) -> Callable[[float], str]:
    def text(v: float) -> str:
        k = int(round(v))
        return f"{zh.format(n=k)} {(en_one if k == 1 else en_many).format(n=k)}"
    return text


#: numeric feature -> its value as a phrase (zh then en); None: the value is missing
NUMERIC_TEXT: dict[str, Callable[[float], str]] = {
    "tenure_days": lambda v: f"成为客户 {_n(v)} 天 Customer for {_n(v)} days",
    "days_since_last_follow_up": lambda v: f"{_n(v)} 天未跟进 No follow-up for {_n(v)} days",
    "follow_ups_30d": _count("近30天跟进 {n} 次", "{n} follow-up in 30 days", "{n} follow-ups in 30 days"),
    "follow_ups_90d": _count("近90天跟进 {n} 次", "{n} follow-up in 90 days", "{n} follow-ups in 90 days"),
    "follow_ups_365d": _count("近一年跟进 {n} 次", "{n} follow-up in 12 months", "{n} follow-ups in 12 months"),
    "open_demands": _count("{n} 个未完成需求", "{n} open demand", "{n} open demands"),
    "high_priority_open_demands": _count("{n} 个高优先级未完成需求", "{n} open high-priority demand",
                                         "{n} open high-priority demands"),
    "feedback_365d": _count("近一年 {n} 条服务反馈", "{n} feedback record in 12 months",
                            "{n} feedback records in 12 months"),
    "complaints_365d": _count("近一年 {n} 次投诉", "{n} complaint in 12 months", "{n} complaints in 12 months"),
    "urgent_feedback_365d": _count("近一年 {n} 个紧急工单", "{n} urgent ticket in 12 months",
                                   "{n} urgent tickets in 12 months"),
    "low_satisfaction_365d": _count("近一年 {n} 次低满意度评分", "{n} low satisfaction rating in 12 months",
                                    "{n} low satisfaction ratings in 12 months"),
    "avg_satisfaction": lambda v: f"平均满意度 {v:.1f} Average satisfaction {v:.1f}",
    "open_opportunities": _count("{n} 个进行中商机", "{n} open opportunity", "{n} open opportunities"),
    "won_opportunities": _count("{n} 个成交商机", "{n} won opportunity", "{n} won opportunities"),
    "lost_opportunities": _count("{n} 个输单", "{n} lost opportunity", "{n} lost opportunities"),
    # amounts are named, never quoted: a role that may not see annual revenue or deal amounts
    # (access.yaml: hidden fields) must not read them in the explanation
    "open_amount": lambda v: "进行中商机金额 Open pipeline amount",
    "won_amount": lambda v: "累计成交金额 Won amount",
    "max_open_probability": lambda v: f"商机最高赢率 {v:.0f}% Best open deal at {v:.0f}%",
    "annual_revenue": lambda v: "年营业额 Annual revenue",
}
MISSING_TEXT = {
    "days_since_last_follow_up": "从未跟进 Never followed up",
    "avg_satisfaction": "无满意度评分 No satisfaction rating",
    "annual_revenue": "年营业额未填 Annual revenue not given",
}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v == "(missing)" or v == ""


def describe(feature: str, value, dicts=None) -> str:
    """The customer's value of ``feature`` as a short zh + en phrase."""
    if feature in CATEGORY_DICTIONARIES:
        dictionary, zh, en = CATEGORY_DICTIONARIES[feature]
        if _missing(value):
            return f"{zh}未填 {en} not given"
        item = dicts.get(dictionary, str(value)) if dicts is not None else None
        label_zh, label_en = (item.label.zh, item.label.en) if item else (str(value), str(value))
        return f"{zh} {label_zh} {en} {label_en}"
    if _missing(value):
        return MISSING_TEXT.get(feature, f"{feature} 未知 {feature} unknown")
    text = NUMERIC_TEXT.get(feature)
    return text(float(value)) if text else f"{feature} = {value}"


def explanation(contributions: Iterable, row: dict, dicts=None) -> str:
    """``"<phrase> (+0.21); <phrase> (-0.05); …"`` for one customer (``row``: feature -> value)."""
    parts = []
    for c in contributions:
        parts.append(f"{describe(c.feature, row.get(c.feature), dicts)} ({c.contribution:+.2f})")
    return "; ".join(parts)


def explanations(contributions: Sequence[Sequence], columns: dict, start: int, dicts=None) -> list[str]:
    """:func:`explanation` for rows ``start …`` of ``columns`` (one list of contributions per row)."""
    out = []
    for k, contribs in enumerate(contributions):
        i = start + k
        row = {c.feature: columns[c.feature][i] for c in contribs}
        out.append(explanation(contribs, row, dicts))
    return out
