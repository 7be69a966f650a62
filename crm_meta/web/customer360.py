"""Customer 360° on screen (``/crm/customer360/<id>``) and on REST (``GET /api/v1/customer/<id>/360``).

Both need ``can_read`` on ``customer`` (the customer screen's own permission, so every role that reads
customers has it; nothing new in schemas/access.yaml). The customer is read with the viewer's
records service — out of scope is 404 — and every related list goes through the access policy
(crm_meta/services/customer360.py): entities the viewer may not read are left out, hidden fields are
omitted, masked values stay masked (there is no reveal here; the record's own page has it).

``register_customer360(appbuilder)`` adds the screen (no menu item: it is linked from the customer's
page) and the API.
"""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flask import abort, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.api import BaseApi, safe
from flask_appbuilder.security.decorators import has_access, permission_name, protect

from crm_meta.errors import RecordNotFound
from crm_meta.metadata.model import Entity, Field, Label
from crm_meta.services import customer360
from crm_meta.web import context
from crm_meta.web.i18n import current_lang, t
from crm_meta.web.security import BearerFirstApi

PERMISSIONS = ["can_read"]
METHODS = {"show": "read", "get_360": "read"}
TITLE = Label("客户全景", "Customer 360°")


# -- values as people read them -------------------------------------------------------------------

def _user_name(user: Any) -> str:
    from crm_meta.web.forms import user_name

    return user_name(user)


def _raw(obj: Any, f: Field) -> Any:
    if f.is_multi:
        return list(getattr(obj, f.name) or [])
    return getattr(obj, f.column, None)


def display(entity: Entity, f: Field, obj: Any, lang: str) -> str:
    """One value for the page: masked as the viewer sees it, labels for codes, names for users."""
    policy = context.policy()
    value = _raw(obj, f)
    if f.name in policy.access(entity.name).masked:
        shown = policy.display(entity.name, f.name, value)
        return "" if shown is None else str(shown)
    if value is None or value == []:
        return ""
    dicts = context.dictionaries()
    if f.storage == "code":
        return dicts.label(f.dictionary, value, lang)
    if f.is_multi:
        return "、".join(dicts.label(f.dictionary, c, lang) for c in value)
    if f.storage == "fk_user":
        return _user_name(getattr(obj, f.name, None))
    if f.storage == "fk_entity":
        target = getattr(obj, f.name, None)
        return str(target) if target is not None else str(value)
    if f.storage == "boolean" or isinstance(value, bool):
        return t("是", "Yes") if value else t("否", "No")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:,.{f.scale if f.scale is not None else 2}f}"
    return str(value)


def time_left(value: Any, now: datetime | None = None) -> tuple[str, bool]:
    """("2 h 15 min left" / "overdue 3 h", overdue?) for a due time (local time, like business times)."""
    if not isinstance(value, datetime):
        if isinstance(value, date):
            value = datetime.combine(value, datetime.min.time())
        else:
            return "", False
    now = now or datetime.now()
    seconds = int((value - now).total_seconds())
    minutes = abs(seconds) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        span = t(f"{days} 天 {hours} 小时", f"{days} d {hours} h")
    elif hours:
        span = t(f"{hours} 小时 {mins} 分", f"{hours} h {mins} min")
    else:
        span = t(f"{mins} 分钟", f"{mins} min")
    if seconds < 0:
        return t(f"已超时 {span}", f"overdue {span}"), True
    return t(f"剩余 {span}", f"{span} left"), False


def _running(entity: Entity, f: Field, obj: Any) -> bool:
    """A due time whose clock still runs: it has a value and the field that stops it is empty."""
    if f.name not in customer360.DUE_FIELDS or _raw(obj, f) is None:
        return False
    done = customer360.DUE_FIELDS[f.name]
    return not (done and entity.has_field(done) and _raw(obj, entity.field(done)) is not None)


def _show_url(entity: Entity, pk: int) -> str | None:
    from crm_meta.web.views import class_name

    try:
        return url_for(f"{class_name(entity, 'View')}.show", pk=pk)
    except Exception:  # noqa: BLE001 - an entity without a screen: no link
        return None


def _stage_labels(entity_name: str, row: dict, lang: str) -> tuple[str, str, str]:
    """(field label, from label, to label) of a status move."""
    registry = context.build().registry
    entity = registry.entity(entity_name)
    name = row.get("field")
    if not name:
        pipelines = registry.pipelines_of(entity_name) if hasattr(registry, "pipelines_of") else ()
        name = pipelines[0].field_name if pipelines else None
    if not name or not entity.has_field(name):
        return "", row.get("from_code") or "", row.get("to_code") or ""
    f = entity.field(name)
    dicts = context.dictionaries()

    def label(code):
        if code in (None, ""):
            return ""
        return dicts.label(f.dictionary, code, lang) if f.dictionary else str(code)

    return f.label.get(lang), label(row.get("from_code")), label(row.get("to_code"))


def page_data(view: customer360.View, lang: str) -> dict:
    """The template's data: every value already turned into text."""
    registry = context.build().registry
    customer_entity = registry.entity(customer360.CUSTOMER)
    c = view.customer
    fields = []
    for f in view.fields:
        text = display(customer_entity, f, c, lang)
        item = {"name": f.name, "label": f.label.get(lang), "value": text}
        if _running(customer_entity, f, c):
            item["left"], item["overdue"] = time_left(_raw(c, f))
        fields.append(item)
    sections = []
    for s in view.sections:
        label = s.entity.label.get(lang)
        if s.several_links:
            label = f"{label}（{s.link.label.get(lang)}）" if lang == "zh" else f"{label} ({s.link.label.get(lang)})"
        rows = []
        for obj in s.rows:
            cells = []
            for f in s.columns:
                cell = {"name": f.name, "value": display(s.entity, f, obj, lang)}
                if _running(s.entity, f, obj):
                    cell["left"], cell["overdue"] = time_left(_raw(obj, f))
                cells.append(cell)
            breached = bool(getattr(obj, customer360.BREACHED_FIELD, False)) and \
                any(f.name == customer360.BREACHED_FIELD for f in s.columns)
            rows.append({"id": obj.id, "title": str(obj), "url": _show_url(s.entity, obj.id), "cells": cells,
                         "breached": breached})
        sections.append({"key": s.key, "entity": s.entity.name, "label": label, "count": s.count,
                         "capped": s.capped, "shown": len(s.rows), "breached": s.breached,
                         "open_clocks": s.open_clocks,
                         "title_label": (s.entity.field(s.entity.title).label.get(lang)
                                         if s.entity.title and s.entity.has_field(s.entity.title) else "#"),
                         "columns": [f.label.get(lang) for f in s.columns], "rows": rows})
    history = []
    for row in view.history:
        entity = registry.entity(row["entity"])
        field_label, old, new = _stage_labels(row["entity"], row, lang)
        at = row.get("at")
        history.append({"at": at.strftime("%Y-%m-%d %H:%M") if isinstance(at, datetime) else (at or ""),
                        "entity": entity.label.get(lang), "record": str(row["record"]),
                        "url": _show_url(entity, row["record_id"]), "field": field_label, "old": old,
                        "new": new, "by": row.get("username") or "", "comment": row.get("comment") or ""})
    next_due = None
    if view.next_follow_up is not None:
        f = customer_entity.field("next_follow_up_at")
        left, overdue = time_left(view.next_follow_up)
        next_due = {"value": display(customer_entity, f, c, lang), "left": left, "overdue": overdue}
    return {"id": c.id, "title": str(c), "fields": fields, "sections": sections, "history": history,
            "next_due": next_due, "show_url": _show_url(customer_entity, c.id),
            "breached": sum(s.breached or 0 for s in view.sections),
            "open_clocks": sum(s.open_clocks or 0 for s in view.sections)}


# -- REST ----------------------------------------------------------------------------------------------

def _api_of(entity_name: str) -> Any:
    from crm_meta.web.api import EntityApi
    from flask import current_app

    return next((v for v in current_app.appbuilder.baseviews
                 if isinstance(v, EntityApi) and v.entity.name == entity_name), None)


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def dump(entity: Entity, obj: Any, lang: str) -> dict:
    """A record as ``GET /api/v1/<entity>/<id>`` returns it to this viewer, plus ``labels`` of its codes."""
    policy = context.policy()
    api = _api_of(entity.name)
    if api is not None:
        data = api.show_model_schema.dump(obj)
    else:  # pragma: no cover - every entity has an API
        data = {f.name: _json(_raw(obj, f)) for f in entity.fields}
    out = {"id": obj.id, **policy.project(entity.name, data)}
    access = policy.access(entity.name)
    dicts = context.dictionaries()
    labels = {}
    for f in entity.fields:
        if f.dictionary and f.name not in access.hidden and f.name not in access.masked:
            value = _raw(obj, f)
            labels[f.name] = ([dicts.label(f.dictionary, c, lang) for c in value] if f.is_multi
                              else dicts.label(f.dictionary, value, lang) if value is not None else None)
    out["labels"] = labels
    return out


def api_data(view: customer360.View, lang: str) -> dict:
    registry = context.build().registry
    customer_entity = registry.entity(customer360.CUSTOMER)
    sections = []
    for s in view.sections:
        sections.append({"key": s.key, "entity": s.entity.name, "field": s.link.name,
                         "label": s.entity.label.get(lang), "count": s.count, "capped": s.capped,
                         "breached": s.breached, "open_clocks": s.open_clocks, "records": [dump(s.entity, obj, lang) for obj in s.rows]})
    history = []
    for row in view.history:
        field_label, old, new = _stage_labels(row["entity"], row, lang)
        history.append({"entity": row["entity"], "record_id": row["record_id"], "field": row.get("field"),
                        "from_code": row.get("from_code"), "to_code": row.get("to_code"),
                        "from_label": old, "to_label": new, "user_id": row.get("user_id"),
                        "username": row.get("username"), "at": _json(row.get("at")),
                        "comment": row.get("comment")})
    return {"customer": dump(customer_entity, view.customer, lang), "sections": sections,
            "status_history": history, "next_follow_up_at": _json(view.next_follow_up)}


def _gather(pk: int) -> customer360.View:
    customer = context.records(customer360.CUSTOMER).get(pk)  # RecordNotFound out of scope
    b = context.build()
    return customer360.gather(context.session(), b.models, context.policy(), customer)


class Customer360View(BaseView):
    route_base = "/crm/customer360"
    class_permission_name = "customer"
    method_permission_name = METHODS
    base_permissions = PERMISSIONS
    default_view = "show"

    @expose("/<int:pk>")
    @has_access
    def show(self, pk: int):
        lang = current_lang()
        try:
            view = _gather(pk)
        except RecordNotFound:
            abort(404)
        data = page_data(view, lang)
        return self.render_template("crm/customer360.html", c360=data, t=t, lang=lang,
                                    title=f"{TITLE.get(lang)} · {data['title']}")


class Customer360Api(BearerFirstApi, BaseApi):
    resource_name = "customer"
    class_permission_name = "customer"
    method_permission_name = METHODS
    base_permissions = PERMISSIONS
    openapi_spec_tag = "Customer 360° 客户全景"

    @expose("/<int:pk>/360", methods=["GET"])
    @protect()
    @safe
    @permission_name("get_360")
    def get_360(self, pk: int):
        """One customer with its related records, as the caller may see them
        ---
        get:
          parameters:
          - in: path
            name: pk
            schema:
              type: integer
          responses:
            200:
              description: The customer (as GET /customer/{pk}), its related records per entity
                (contacts, follow-ups, demands, feedback, opportunities …, each within the caller's
                access scope; entities the caller may not read are left out), the status history
                and the next follow-up due
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      result: {type: object}
            401:
              $ref: '#/components/responses/401'
            403:
              description: No read permission on customers
            404:
              $ref: '#/components/responses/404'
        """
        lang = current_lang()
        try:
            view = _gather(pk)
        except RecordNotFound:
            return self.response_404()
        return self.response(200, id=view.customer.id, result=api_data(view, lang))


def register_customer360(appbuilder: Any) -> None:
    """Add the 360° screen (linked from the customer's page) and its REST endpoint."""
    appbuilder.add_view_no_menu(Customer360View)
    appbuilder.add_api(Customer360Api)
