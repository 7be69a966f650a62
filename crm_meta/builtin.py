"""Built-in behaviour registered through the plugin hooks like any plugin (disable: CRM_DISABLED_PLUGINS)."""
from __future__ import annotations

from typing import Any

from markupsafe import escape
from sqlalchemy import func, select

from crm_meta.metadata.fieldtypes import FIELD_TYPES
from crm_meta.plugins import Widget, hookimpl
from crm_meta.services.records import COUNT_CAP


def render_record_counts(build: Any, actor: Any) -> str:
    """How many records of each entity there are (capped), for the entities the user may read."""
    from flask import current_app, url_for

    from crm_meta.web.context import policy

    rows = []
    scope = policy()
    for entity in build.registry.entities:
        if not scope.can(entity.name, "read"):
            continue
        model = build.models.model(entity.name)
        # the records this user may see, not the whole table (charts and counts follow the row scope)
        inner = scope.scope(entity.name, select(model.id), model).limit(COUNT_CAP + 1).subquery()
        n = build.db.session.execute(select(func.count()).select_from(inner)).scalar_one()
        shown = f"{COUNT_CAP:,}+" if n > COUNT_CAP else f"{n:,}"
        view = next((v for v in current_app.appbuilder.baseviews
                     if getattr(v, "entity", None) is not None and v.entity.name == entity.name
                     and hasattr(v, "list")), None)
        href = url_for(f"{type(view).__name__}.list") if view else "#"
        rows.append(f'<tr><td><a href="{escape(href)}">{escape(entity.label.get(actor.lang))}</a></td>'
                    f'<td class="text-right">{escape(shown)}</td></tr>')
    if not rows:
        return ""
    return '<table class="table table-condensed crm-record-counts">' + "".join(rows) + "</table>"


def render_security_alerts(build: Any, actor: Any) -> str:
    """Open alerts and the latest ones (crm_meta/web/audit_views.py); for those who may see alerts."""
    from crm_meta.web.audit_views import render_alerts_widget

    return render_alerts_widget(build, actor)


@hookimpl
def crm_dashboard_widgets():
    return [Widget("record_counts", {"zh": "记录数", "en": "Records"}, render_record_counts, order=0),
            # entity="alerts": the dashboard asks can_read on the alerts screen, so only its users see the box
            Widget("security_alerts", {"zh": "安全告警", "en": "Security alerts"}, render_security_alerts,
                   entity="alerts", order=1)]


@hookimpl
def crm_field_types():
    """The standard types of the dictionary language (string, text, …, autonumber), as any plugin's."""
    return list(FIELD_TYPES.values())
