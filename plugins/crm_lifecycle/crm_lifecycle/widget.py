"""The dashboard box "客户流失风险 Churn risk": risk distribution and the customers most at risk.

Only customers the viewer may see count: every query goes through the access policy,
``crm_meta.web.context.policy().scope("customer", stmt, model)``, and its field rules apply (a
hidden score or explanation is not shown, a masked name is shown masked). Plain HTML with CSS
bars (inline ``style`` widths), no script, nothing loaded from elsewhere; every value is escaped.
"""
from __future__ import annotations

from markupsafe import escape
from sqlalchemy import case, func, select

from crm_meta.services.dictionaries import Dictionaries

from .stages import AT_RISK, BANDS, MEDIUM_RISK, STAGES

__all__ = ["render_risk", "TOP"]

TOP = 10
STAGE_COLORS = {"new": "#3498db", "growing": "#27ae60", "mature": "#16a085", "at_risk": "#e67e22",
                "churned": "#7f8c8d"}
BAND_COLORS = {"low": "#27ae60", "medium": "#f1c40f", "high": "#c0392b"}
BAND_LABELS = {"low": ("低风险 <{m}", "Low <{m}"), "medium": ("中风险 {m}–{h}", "Medium {m}–{h}"),
               "high": ("高风险 ≥{h}", "High ≥{h}")}


def _bars(rows: list[tuple[str, int, str]]) -> str:
    total = sum(n for _label, n, _color in rows) or 1
    out = []
    for label, n, color in rows:
        pct = 100.0 * n / total
        out.append(
            '<tr><td class="crm-lc-label">{}</td>'
            '<td class="crm-lc-track" style="width:60%"><div class="crm-lc-bar" '
            'style="width:{:.1f}%;min-width:{}px;background:{};height:12px"></div></td>'
            '<td class="text-right">{}</td></tr>'.format(escape(label), pct, 2 if n else 0, escape(color),
                                                         escape(f"{n:,}")))
    return '<table class="table table-condensed crm-lc-dist">' + "".join(out) + "</table>"


def render_risk(build, actor) -> str:
    from crm_meta.web import context

    zh = not (actor.lang or "zh").startswith("en")
    t = (lambda a, b: a) if zh else (lambda a, b: b)
    session = build.db.session
    customer = build.models.model("customer")
    dicts = Dictionaries.load(session, build.models.system["dict_item"])
    policy = context.policy()

    def _scoped(stmt):
        return policy.scope("customer", stmt, customer)

    hidden = policy.access("customer").hidden
    if {"churn_risk", "lifecycle_stage"} & hidden:
        return "<p class='crm-lc-empty'>{}</p>".format(escape(t("您无权查看流失风险", "You may not see churn risk")))

    scored = customer.scored_at.is_not(None)
    by_stage = dict(session.execute(_scoped(
        select(customer.lifecycle_stage, func.count()).where(scored).group_by(customer.lifecycle_stage))).all())
    if not sum(by_stage.values()):
        if policy.superuser:  # the one who can do something about it gets the commands
            return "<p class='crm-lc-empty'>{}</p>".format(escape(t(
                "尚未评分：请运行 flask --app app crm jobs run（或 crm lifecycle train 和 score）",
                "Not scored yet: run `flask --app app crm jobs run` (or `crm lifecycle train` and `score`)")))
        return "<p class='crm-lc-empty'>{}</p>".format(escape(t(
            "尚未评分：系统完成每日评分后显示", "Not scored yet: shown once the daily scoring has run")))
    band = case((customer.churn_risk >= AT_RISK, "high"), (customer.churn_risk >= MEDIUM_RISK, "medium"),
                else_="low")
    by_band = dict(session.execute(_scoped(
        select(band, func.count()).where(scored).group_by(band))).all())

    stage_rows = [(dicts.label("lifecycle_stage", s, actor.lang), by_stage.get(s, 0), STAGE_COLORS[s])
                  for s in STAGES]
    band_rows = [(t(*BAND_LABELS[b]).format(m=MEDIUM_RISK, h=AT_RISK), by_band.get(b, 0), BAND_COLORS[b])
                 for b in BANDS]

    top = session.execute(_scoped(
        select(customer.id, customer.name, customer.churn_risk, customer.lifecycle_stage, customer.risk_explanation)
        .where(scored, customer.lifecycle_stage != "churned")
        .order_by(customer.churn_risk.desc(), customer.id).limit(TOP))).all()
    items = []
    show_why = "risk_explanation" not in hidden
    for cid, name, risk, stage, why in top:
        items.append(
            '<tr><td><a href="/customer/show/{}">{}</a></td><td class="text-right">{}</td><td>{}</td>'
            '<td class="small text-muted">{}</td></tr>'.format(
                escape(cid), escape(policy.display("customer", "name", name)), escape(f"{float(risk or 0):.0%}"),
                escape(dicts.label("lifecycle_stage", stage, actor.lang)),
                escape(policy.display("customer", "risk_explanation", why or "") if show_why else "")))
    top_html = ('<table class="table table-condensed crm-lc-top"><thead><tr><th>{}</th><th>{}</th><th>{}</th>'
                '<th>{}</th></tr></thead><tbody>{}</tbody></table>').format(
        escape(t("客户", "Customer")), escape(t("流失风险", "Churn risk")), escape(t("阶段", "Stage")),
        escape(t("主要原因", "Main reasons")), "".join(items)) if items else ""
    return (
        '<div class="crm-lifecycle">'
        f'<h5>{escape(t("生命周期阶段", "Lifecycle stages"))}</h5>{_bars(stage_rows)}'
        f'<h5>{escape(t("流失风险分布", "Churn risk"))}</h5>{_bars(band_rows)}'
        f'<h5>{escape(t(f"风险最高的 {TOP} 个客户", f"{TOP} customers most at risk"))}</h5>{top_html}'
        "</div>"
    )
