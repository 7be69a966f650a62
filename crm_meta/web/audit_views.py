"""The audit trail on screen: the admin audit screen, the alerts list, a record's history (JSON) and
the dashboard box of open alerts. Read-only except acknowledging an alert (a change on crm_alert).

* ``/crm/audit/``  — search by user, action, entity, record id and date range, paged (permission
  ``can_read`` on ``audit``: admins, and roles given the ``audit`` screen);
* ``/crm/alerts/`` — alerts newest first; ``POST /crm/alerts/<id>/acknowledge`` (CSRF token) marks one
  seen (``can_read`` / ``can_update`` on ``alerts``);
* ``GET /crm/history/<entity>/<id>`` — the record's entries as JSON, for the History tab (the caller
  must be able to read the entity);
* ``register_audit(appbuilder, app)`` adds these, the append-only triggers, the ``X-Request-Id``
  response header and the sign-in protection of crm_meta/web/auth.py.

Values of sensitive fields are shown masked, as on the record's page, also to viewers who may reveal
them there (each reveal is audited; the history must not be a way around it).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable
from urllib.parse import urlencode

from flask import abort, current_app, flash, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView, expose

from crm_meta.errors import RecordNotFound
from flask_appbuilder.security.decorators import has_access
from markupsafe import escape

from crm_meta.metadata.model import Label
from crm_meta.services import alerts as alert_rules
from crm_meta.services import audit
from crm_meta.web import context
from crm_meta.web.i18n import current_lang, lazy, t

AUDIT_LABEL = Label("审计日志", "Audit trail")
ALERTS_LABEL = Label("安全告警", "Security alerts")
SECURITY_CATEGORY = "Security"  # FAB's own category (users, roles); our screens join it
ACTION_LABELS = {
    "create": Label("新建", "Create"),
    "update": Label("修改", "Update"),
    "delete": Label("删除", "Delete"),
    "reveal": Label("查看明文", "Reveal"),
    "export": Label("导出", "Export"),
    "import": Label("导入", "Import"),
    "login": Label("登录成功", "Sign-in"),
    "login_failed": Label("登录失败", "Failed sign-in"),
    "login_locked": Label("锁定中登录被拒", "Sign-in refused (locked)"),
    "denied": Label("拒绝访问", "Access denied"),
    "approval": Label("审批", "Approval"),
    "assign": Label("自动分配", "Assigned by rule"),
    "reassign": Label("转交负责人", "Reassigned"),
    "dictionary": Label("数据字典修改", "Dictionary change"),
    "schema_change": Label("模型修改", "Model change"),
}
STATUS_LABELS = {alert_rules.OPEN: Label("未处理", "Open"),
                 alert_rules.ACKNOWLEDGED: Label("已确认", "Acknowledged")}
PAGE_SIZE = 50


# -- who may see what ---------------------------------------------------------------------------------

def can_reveal() -> Callable[[str], bool]:
    """entity → may the current viewer see that entity's sensitive values unmasked (the access policy)."""
    policy = context.policy()
    return lambda entity: policy.can(entity, "reveal")


def viewer_mask_of() -> audit.MaskOf:
    """How the current viewer sees audited values, per entity and field: masked as the record's page
    masks them (declared ``mask`` fields and the fields their roles mask), hidden ones ****.

    Also for viewers who may reveal: a full value is seen one at a time through the record's reveal,
    which is audited; a history showing old and new phones in full bypassed that."""
    policy = context.policy()
    return audit.masker(context.build().registry, None,
                        hidden=lambda e: policy.access(e).hidden,
                        masked=lambda e: policy.access(e).masked)


def _entity_label(name: str | None, lang: str) -> str:
    if not name:
        return ""
    try:
        return context.build().registry.entity(name).label.get(lang)
    except KeyError:
        return name


def _field_label(entity: str | None, field: str | None, lang: str) -> str:
    if not field:
        return ""
    try:
        return context.build().registry.entity(entity).field(field).label.get(lang)
    except KeyError:
        return field


def decorate(rows: list[dict[str, Any]], lang: str) -> list[dict[str, Any]]:
    """Audit rows as people read them: action, entity and field labels, readable values."""
    for r in rows:
        r["action_label"] = action_label(r["action"], lang)
        r["entity_label"] = _entity_label(r["entity"], lang)
        r["field_label"] = _field_label(r["entity"], r["field"], lang)
    return readable(rows, lang)


def action_label(action: str, lang: str) -> str:
    return ACTION_LABELS[action].get(lang) if action in ACTION_LABELS else action


def readable(rows: list[dict[str, Any]], lang: str) -> list[dict[str, Any]]:
    """Add ``old_text`` / ``new_text``: each audited value as the record's page shows it — a
    dictionary item's label rather than its code, a person's name rather than a user id, a
    referenced record's title (when the viewer may read it, else its number), 是/否, a time to the
    minute. Masked values stay as they are."""
    registry, dicts, policy = context.build().registry, context.dictionaries(), context.policy()
    entities = {e.name for e in registry.entities}
    fields = []  # each row's field (None: masked, or not a field of a declared entity)
    wanted: dict[str, set[int]] = {}  # "user" or a referenced entity → ids to name
    for r in rows:
        f = None
        if r.get("entity") in entities and r.get("field") and not r.get("masked"):
            ent = registry.entity(r["entity"])
            f = ent.field(r["field"]) if ent.has_field(r["field"]) else None
        fields.append(f)
        if f is not None and f.is_fk:
            for v in (r.get("old_value"), r.get("new_value")):
                if v is not None and str(v).isdigit():
                    wanted.setdefault("user" if f.storage == "fk_user" else f.entity, set()).add(int(v))
    names = {key: names_of(key, ids, policy, registry) for key, ids in wanted.items()}
    yes, no = t("是", "Yes"), t("否", "No")

    def text(f, value):
        if value is None or f is None:
            return value
        s = f.storage
        if f.is_multi:
            return "、".join(dicts.label(f.dictionary, c, lang) for c in str(value).split(",") if c)
        if s == "code":
            return dicts.label(f.dictionary, str(value), lang)
        if s == "boolean":
            return {"true": yes, "false": no}.get(str(value), value)
        if s == "datetime":
            return str(value)[:16]
        if f.type == "money":
            try:
                return f"{Decimal(str(value)):,.2f}"
            except ArithmeticError:
                return value
        if f.is_fk and str(value).isdigit():
            found = names["user" if s == "fk_user" else f.entity].get(int(value))
            return found or f"#{value}"
        return value

    for r, f in zip(rows, fields):
        r["old_text"], r["new_text"] = text(f, r.get("old_value")), text(f, r.get("new_value"))
    return rows


def names_of(key: str, ids: set[int], policy: Any, registry: Any) -> dict[int, str]:
    """Display names of users, or titles of records of entity ``key`` the viewer may read."""
    from sqlalchemy import select

    from crm_meta.services.assignment import user_label

    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    session, models = context.session(), context.build().models
    if key == "user":
        user = current_app.appbuilder.sm.user_model
        return {u.id: user_label(u) for u in session.execute(select(user).where(user.id.in_(sorted(ids)))).scalars()}
    if key not in models.models or not policy.can(key, "read"):
        return {}
    ent, model = registry.entity(key), models.model(key)
    access = policy.access(key)
    if not ent.title or ent.title in access.hidden or ent.title in access.masked or not ent.field(ent.title).column:
        return {}
    title = getattr(model, ent.field(ent.title).column)
    stmt = policy.scope(key, select(model.id, title).where(model.id.in_(sorted(ids))), model)
    return {rid: f"{value} (#{rid})" for rid, value in session.execute(stmt) if value not in (None, "")}


def _int_arg(name: str, default: int | None = None) -> int | None:
    value = request.args.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        return default


# -- screens -----------------------------------------------------------------------------------------

class AuditView(BaseView):
    """The audit trail, searched and paged; read-only (there is no edit or delete of entries anywhere)."""

    route_base = "/crm/audit"
    class_permission_name = "audit"
    method_permission_name = {"index": "read"}
    base_permissions = ["can_read"]
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        lang = current_lang()
        build = context.build()
        filters = {k: request.args.get(k, "").strip() for k in
                   ("user", "action", "entity", "record_id", "date_from", "date_to")}
        page = max(1, _int_arg("page", 1) or 1)
        error = None
        # An existing account is searched by id (indexed with the time); any other name — someone
        # who tried to sign in with it — by the name itself.
        known = self.appbuilder.sm.find_user(username=filters["user"]) if filters["user"] else None
        try:
            result = audit.search(
                context.session(), build.models.system, user_id=known.id if known else None,
                user=None if known else (filters["user"] or None),
                action=filters["action"] or None, entity=filters["entity"] or None,
                record_id=filters["record_id"] or None, date_from=filters["date_from"] or None,
                date_to=filters["date_to"] or None, page=page, page_size=PAGE_SIZE, mask_of=viewer_mask_of())
        except ValueError:
            error = t("筛选条件无效：记录编号须为数字，日期格式为 YYYY-MM-DD",
                      "Invalid filter: the record id must be a number and dates YYYY-MM-DD")
            result = {"rows": [], "count": 0, "capped": False, "page": 1, "page_size": PAGE_SIZE}
        rows = decorate(result["rows"], lang)
        query = {k: v for k, v in filters.items() if v}
        pages = {
            "prev": f"?{urlencode({**query, 'page': page - 1})}" if page > 1 else None,
            "next": f"?{urlencode({**query, 'page': page + 1})}" if page * PAGE_SIZE < result["count"] else None,
        }
        views = {e.name: _show_endpoint(e.name) for e in build.registry.entities}
        return self.render_template(
            "crm/audit.html", rows=rows, result=result, filters=filters, error=error, pages=pages,
            actions=[(code, label.get(lang)) for code, label in ACTION_LABELS.items()],
            entities=[(e.name, e.label.get(lang)) for e in build.registry.entities],
            show_endpoints=views, title=AUDIT_LABEL.get(lang), tr=t)


def _show_endpoint(entity: str) -> str | None:
    for v in current_app.appbuilder.baseviews:
        ent = getattr(v, "entity", None)
        if ent is not None and getattr(ent, "name", None) == entity and hasattr(v, "show"):
            return f"{type(v).__name__}.show"
    return None


class AlertsView(BaseView):
    """Alerts raised by the rules of the ``alert_rule`` dictionary; admins acknowledge them."""

    route_base = "/crm/alerts"
    class_permission_name = "alerts"
    method_permission_name = {"index": "read", "acknowledge": "update"}
    base_permissions = ["can_read", "can_update"]
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        lang = current_lang()
        build = context.build()
        status = request.args.get("status", "").strip()
        status = status if status in STATUS_LABELS else None
        page = max(1, _int_arg("page", 1) or 1)
        session, table = context.session(), build.models.system["alert"]
        total = alert_rules.count(session, table, status=status)
        rows = alert_rules.latest(session, table, status=status, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        labels = _rule_labels(lang)
        for r in rows:
            r["rule_label"] = labels.get(r["rule"], r["rule"])
            r["status_label"] = STATUS_LABELS[r["status"]].get(lang) if r["status"] in STATUS_LABELS else r["status"]
        query = {"status": status} if status else {}
        pages = {
            "prev": f"?{urlencode({**query, 'page': page - 1})}" if page > 1 else None,
            "next": f"?{urlencode({**query, 'page': page + 1})}" if page * PAGE_SIZE < total else None,
        }
        return self.render_template(
            "crm/alerts.html", rows=rows, total=total, status=status, pages=pages,
            statuses=[(k, v.get(lang)) for k, v in STATUS_LABELS.items()],
            can_ack=self.appbuilder.sm.has_access("can_update", self.class_permission_name),
            title=ALERTS_LABEL.get(lang), tr=t)

    @expose("/<int:alert_id>/acknowledge", methods=["POST"])
    @has_access
    def acknowledge(self, alert_id: int):
        session = context.session()
        if alert_rules.acknowledge(session, context.build().models.system["alert"], alert_id, context.actor()):
            session.commit()
            flash(t("告警已确认", "Alert acknowledged"), "success")
        else:
            session.rollback()
            flash(t("该告警不存在或已确认", "No such open alert"), "warning")
        return redirect(url_for("AlertsView.index", **({"status": request.args["status"]}
                                                        if request.args.get("status") else {})))


def _rule_labels(lang: str) -> dict[str, str]:
    return {i.code: i.label.get(lang) for i in context.dictionaries().items(alert_rules.DICTIONARY, active_only=False)}


class HistoryView(BaseView):
    """``GET /crm/history/<entity>/<id>``: a record's audit entries as JSON (newest first)."""

    route_base = "/crm/history"
    default_view = "history"
    base_permissions: list[str] = []  # checked per entity below (can_read on the entity)

    @expose("/<entity>/<int:record_id>")
    def history(self, entity: str, record_id: int):
        sm = self.appbuilder.sm
        if sm.current_user is None or not getattr(sm.current_user, "is_authenticated", True):
            return jsonify({"message": t("请先登录", "Not signed in")}), 401
        build = context.build()
        if entity not in build.models.models:
            abort(404)
        if not sm.has_access("can_read", entity):
            abort(403)
        try:
            context.records(entity).get(record_id)  # outside the user's row scope: 404, no history
        except RecordNotFound:
            abort(404)
        lang = current_lang()
        limit = min(max(_int_arg("limit", 200) or 200, 1), 1000)
        rows = audit.history(context.session(), build.models.system, entity, record_id, limit=limit,
                             mask_of=viewer_mask_of())
        return jsonify({"entity": entity, "record_id": record_id, "entries": decorate(rows, lang)})


# -- dashboard ----------------------------------------------------------------------------------------

def render_alerts_widget(build: Any, actor: Any) -> str:
    """The dashboard box: how many alerts are open and the latest few, for those who see alerts."""
    sm = current_app.appbuilder.sm
    if not sm.has_access("can_read", "alerts"):
        return ""
    lang = getattr(actor, "lang", None) or current_lang()
    session, table = build.db.session, build.models.system["alert"]
    n = alert_rules.open_count(session, table)
    rows = alert_rules.latest(session, table, limit=5)
    labels = _rule_labels(lang)
    href = url_for("AlertsView.index")
    head = (f'<p class="crm-open-alerts"><a href="{escape(href)}?status=open"><span class="badge'
            f'{" alert-danger" if n else ""}">{n}</span> '
            f'{escape(t("条未处理告警", "open alerts"))}</a></p>')
    if not rows:
        return head + f'<p class="text-muted">{escape(t("暂无告警", "No alerts"))}</p>'
    items = "".join(
        f'<tr class="{"danger" if r["status"] == alert_rules.OPEN else ""}">'
        f'<td>{escape(labels.get(r["rule"], r["rule"]))}</td><td>{escape(r["subject"])}</td>'
        f'<td class="text-right">{r["hits"]}</td>'
        f'<td>{escape(r["last_at"].strftime("%Y-%m-%d %H:%M"))}</td></tr>' for r in rows)
    return head + f'<table class="table table-condensed crm-latest-alerts">{items}</table>'


# -- registration -------------------------------------------------------------------------------------

def register_audit(appbuilder: Any, app: Any) -> None:
    """Screens, append-only triggers, the X-Request-Id header and sign-in protection, for one app.

    Call inside the app context, after the entity screens are registered and before permissions
    are synchronised (so the ``audit`` and ``alerts`` permissions exist and admins get them).
    """
    from crm_meta.web.auth import register_auth

    audit.install_append_only(context.build().db.engine)
    appbuilder.add_view(AuditView, "audit", label=lazy(AUDIT_LABEL), icon="fa-history",
                        category=SECURITY_CATEGORY, category_icon="fa-cogs")
    appbuilder.add_view(AlertsView, "alerts", label=lazy(ALERTS_LABEL), icon="fa-bell",
                        category=SECURITY_CATEGORY, category_icon="fa-cogs")
    appbuilder.add_view_no_menu(HistoryView)
    register_auth(app, appbuilder)
    app.after_request(_request_id_header)


def _request_id_header(response):
    response.headers.setdefault("X-Request-Id", context.request_id() or "")
    return response
