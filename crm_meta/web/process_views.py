"""Screens of the follow-up cadence and the ticket SLAs: 我的跟进 /crm/followups/, 通知
/crm/notifications/ (and on REST /api/v1/notifications/), 工单超时 /crm/sla/, their dashboard boxes,
and "time left" on ticket pages.

Registered by the built-in plugin ``crm_meta.process`` (``crm_register_views``). Every query of
records goes through the user's access policy (``context.policy().scope``); notifications are the
signed-in user's own. Permissions: ``followups`` (can_read) and ``sla`` (can_read) go to every role
that may read customers / feedback, ``notifications`` (can_read, can_write) to every role
(crm_meta/web/permissions.py ``role_permissions``).
"""
from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.api import BaseApi, safe
from flask_appbuilder.security.decorators import has_access, permission_name, protect
from flask_appbuilder.security.sqla.models import User
from markupsafe import Markup, escape
from sqlalchemy import select

from crm_meta.metadata.model import Label
from crm_meta.services import clock, followups, notifications, sla
from crm_meta.web import context
from crm_meta.web.forms import user_name
from crm_meta.web.i18n import current_lang, lazy, t
from crm_meta.web.security import BearerFirstApi

FOLLOWUPS_LABEL = Label("我的跟进", "My follow-ups")
NOTIFICATIONS_LABEL = Label("通知", "Notifications")
SLA_LABEL = Label("工单超时", "SLA breaches")


# -- helpers -----------------------------------------------------------------------------------------

def _names(ids) -> dict[int, str]:
    ids = sorted({i for i in ids if i is not None})
    if not ids:
        return {}
    return {u.id: user_name(u) for u in context.session().execute(select(User).where(User.id.in_(ids))).scalars()}


def _label(entity: str, field: str, code: Any) -> str:
    b = context.build()
    e = b.registry.entity(entity)
    if code is None or not e.has_field(field) or not e.field(field).dictionary:
        return "" if code is None else str(code)
    return context.dictionaries().label(e.field(field).dictionary, code, current_lang())


def show_url(entity: str, record_id: Any) -> str | None:
    """The show page of a record (the generated screens live at /<entity>/show/<id>)."""
    if not entity or record_id is None or entity not in context.build().models.models:
        return None
    return f"/{entity}/show/{int(record_id)}"


def _member(user_id: int | None) -> tuple[str | None, bool]:
    if user_id is None:
        return None, False
    member = context.build().models.system["member"]
    row = context.session().execute(select(member.c.department, member.c.is_manager)
                                    .where(member.c.user_id == user_id)).first()
    return (row.department, bool(row.is_manager)) if row else (None, False)


def followup_modes() -> tuple[list[str], dict[str, Any]]:
    """The views of "My follow-ups" this user may choose: mine; team (managers: their department's
    customers); all (users whose customer scope is all). → (modes, {mode: (owner_id, departments)})."""
    policy = context.policy()
    uid = policy.user_id
    scope = policy.access(followups.CUSTOMER).scope
    department, is_manager = _member(uid)
    modes = {"mine": (uid, None)}
    if department and (is_manager or scope in ("department", "department_tree")):
        modes["team"] = (None, {department} if scope == "department" else set(policy.below(department)))
    if scope == "all":
        modes["all"] = (None, None)
    order = [m for m in ("team", "mine", "all") if m in modes]
    return order, modes


# -- 我的跟进 ----------------------------------------------------------------------------------------

class FollowUpsView(BaseView):
    route_base = "/crm/followups"
    default_view = "index"
    class_permission_name = "followups"
    method_permission_name = {"index": "read"}
    base_permissions = ["can_read"]

    @expose("/")
    @has_access
    def index(self):
        b = context.build()
        lang = current_lang()
        order, modes = followup_modes()
        mode = request.args.get("who") if request.args.get("who") in modes else order[0]
        owner_id, departments = modes[mode]
        agenda = followups.agenda(context.session(), b.models, context.policy(), clock.today(),
                                  owner_id=owner_id, departments=departments)
        names = _names(r["owner_id"] for rows in (agenda.overdue, agenda.today, agenda.upcoming) for r in rows)
        for rows in (agenda.overdue, agenda.today, agenda.upcoming):
            for r in rows:
                r["owner_name"] = names.get(r["owner_id"], "")
                r["grade_label"] = _label("customer", followups.GRADE, r.get(followups.GRADE))
                r["url"] = show_url("customer", r["id"])
                r["days"] = (agenda.day - r["next"]).days if r["next"] else 0
        mode_labels = {"mine": t("我的客户", "My customers"), "team": t("本部门", "My department"),
                       "all": t("全部", "Everyone")}
        return self.render_template(
            "crm/followups.html", agenda=agenda, t=t, lang=lang, mode=mode,
            modes=[(m, mode_labels[m]) for m in order], cap=followups.AGENDA_LIMIT,
            sections=[("overdue", t("已逾期", "Overdue"), agenda.overdue),
                      ("today", t("今日到期", "Due today"), agenda.today),
                      ("upcoming", t(f"未来 {followups.UPCOMING_DAYS} 天", f"Next {followups.UPCOMING_DAYS} days"),
                       agenda.upcoming)])


# -- 通知 -----------------------------------------------------------------------------------------

def _notice_rows(user_id: int | None, lang: str, limit: int = notifications.LIST_LIMIT) -> list[dict]:
    table = context.build().models.system["notification"]
    rows = []
    for n in notifications.for_user(context.session(), table, user_id, lang, limit=limit):
        if n.kind == notifications.SLA_BREACH and n.record_id is not None:
            url = show_url(n.entity, n.record_id)
        elif n.kind == notifications.FOLLOW_UP_DUE:
            url = url_for("FollowUpsView.index")
        else:
            url = show_url(n.entity, n.record_id)
        rows.append({"id": n.id, "kind": n.kind, "text": n.text, "url": url, "read": n.read_at is not None,
                     "created_at": n.created_at})
    return rows


class NotificationsView(BaseView):
    route_base = "/crm/notifications"
    default_view = "index"
    class_permission_name = "notifications"
    method_permission_name = {"index": "read", "mark_read": "write", "mark_all_read": "write"}
    base_permissions = ["can_read", "can_write"]

    @expose("/")
    @has_access
    def index(self):
        lang = current_lang()
        rows = _notice_rows(context.policy().user_id, lang)
        return self.render_template("crm/notifications.html", notices=rows, t=t,
                                    unread=sum(1 for r in rows if not r["read"]))

    @expose("/<int:notice_id>/read", methods=["POST"])
    @has_access
    def mark_read(self, notice_id: int):
        table = context.build().models.system["notification"]
        done = notifications.mark_read(context.session(), table, context.policy().user_id, [notice_id])
        context.session().commit()
        if not done:
            abort(404)
        return redirect(url_for("NotificationsView.index"))

    @expose("/read-all", methods=["POST"])
    @has_access
    def mark_all_read(self):
        table = context.build().models.system["notification"]
        n = notifications.mark_read(context.session(), table, context.policy().user_id)
        context.session().commit()
        flash(t(f"已将 {n} 条通知标为已读", f"Marked {n} notification(s) as read"), "success")
        return redirect(url_for("NotificationsView.index"))


NOTICE_PAGE_SIZE, NOTICE_MAX_PAGE_SIZE, NOTICE_MAX_IDS = 20, 100, 1000


def _flag(value: str | None) -> bool | None:
    if value is None or value == "":
        return False
    return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(value.lower())


def _whole(value: str | None, default: int, low: int, high: int) -> int | None:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        return None
    return n if low <= n <= high else None


def _notice_json(n: notifications.Notice) -> dict:
    if n.kind == notifications.FOLLOW_UP_DUE:
        url = url_for("FollowUpsView.index")
    else:
        url = show_url(n.entity, n.record_id)
    return {"id": n.id, "kind": n.kind, "entity": n.entity, "record_id": n.record_id, "text": n.text, "url": url,
            "created_at": n.created_at.isoformat() if n.created_at else None,
            "read_at": n.read_at.isoformat() if n.read_at else None}


class NotificationsApi(BearerFirstApi, BaseApi):
    """The caller's own notifications on REST (the screen is NotificationsView; same permissions)."""

    resource_name = "notifications"
    class_permission_name = "notifications"
    method_permission_name = {"get_list": "read", "mark_read": "write"}
    base_permissions = ["can_read", "can_write"]
    openapi_spec_tag = "Notifications 通知"

    @expose("/", methods=["GET"])
    @protect()
    @safe
    @permission_name("get_list")
    def get_list(self):
        """Your notifications, newest first (follow-up reminders and tasks, SLA escalations, moves of your records)
        ---
        get:
          parameters:
          - in: query
            name: unread_only
            description: Only the unread ones (`true` / `false`, default false)
            schema: {type: boolean}
          - in: query
            name: page
            description: Page number, from 0
            schema: {type: integer, minimum: 0, default: 0}
          - in: query
            name: page_size
            schema: {type: integer, minimum: 1, maximum: 100, default: 20}
          responses:
            200:
              description: One page of your notifications; `count` is how many match in all, `unread`
                how many of yours are unread
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      count: {type: integer}
                      unread: {type: integer}
                      page: {type: integer}
                      page_size: {type: integer}
                      result:
                        type: array
                        items:
                          type: object
                          properties:
                            id: {type: integer}
                            kind: {type: string, description: 'follow_up_due, follow_up_task, sla_breach, transition, …'}
                            entity: {type: string, nullable: true}
                            record_id: {type: integer, nullable: true}
                            text: {type: string, description: In the caller's language}
                            url: {type: string, nullable: true, description: The screen the notice is about}
                            created_at: {type: string, format: date-time, description: UTC}
                            read_at: {type: string, format: date-time, nullable: true, description: UTC}
            400: {$ref: '#/components/responses/400'}
            401: {$ref: '#/components/responses/401'}
        """
        unread_only = _flag(request.args.get("unread_only"))
        page = _whole(request.args.get("page"), 0, 0, 10**6)
        size = _whole(request.args.get("page_size"), NOTICE_PAGE_SIZE, 1, NOTICE_MAX_PAGE_SIZE)
        problems = [name for name, v in (("unread_only", unread_only), ("page", page), ("page_size", size))
                    if v is None]
        if problems:
            return self.response_400(message=f"Invalid query parameter(s): {', '.join(problems)} (unread_only: "
                                             f"true/false; page: 0 or more; page_size: 1 to {NOTICE_MAX_PAGE_SIZE})")
        table = context.build().models.system["notification"]
        user_id = context.policy().user_id
        total, rows = notifications.page_for_user(context.session(), table, user_id, current_lang(),
                                                  unread_only=bool(unread_only), page=page, page_size=size)
        return self.response(200, count=total, unread=notifications.unread_count(context.session(), table, user_id),
                             page=page, page_size=size, result=[_notice_json(n) for n in rows])

    @expose("/read", methods=["POST"])
    @protect()
    @safe
    @permission_name("mark_read")
    def mark_read(self):
        """Mark notifications as read: the ones listed in `ids`, or all of yours with `{}`
        ---
        post:
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    ids:
                      type: array
                      maxItems: 1000
                      items: {type: integer}
                      description: Ids of your notifications (others' ids are ignored); leave out to mark all
          responses:
            200:
              description: How many were marked now and how many of yours are still unread
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      marked: {type: integer}
                      unread: {type: integer}
            400: {$ref: '#/components/responses/400'}
            401: {$ref: '#/components/responses/401'}
        """
        body = request.get_json(silent=True) if request.is_json else None
        if not isinstance(body, dict):
            return self.response_400(message="The body must be a JSON object: {\"ids\": [...]} or {} for all")
        unknown = sorted(set(body) - {"ids"})
        ids = body.get("ids")
        if unknown or ("ids" in body and not (
                isinstance(ids, list) and len(ids) <= NOTICE_MAX_IDS
                and all(isinstance(i, int) and not isinstance(i, bool) for i in ids))):
            return self.response_400(message=f"`ids` must be a list of at most {NOTICE_MAX_IDS} notification ids"
                                             + (f"; unknown key(s): {', '.join(unknown)}" if unknown else ""))
        table = context.build().models.system["notification"]
        user_id = context.policy().user_id
        marked = notifications.mark_read(context.session(), table, user_id, ids if "ids" in body else None)
        context.session().commit()
        return self.response(200, marked=marked, unread=notifications.unread_count(context.session(), table, user_id))


# -- 工单超时 ---------------------------------------------------------------------------------------

def _ticket_rows(which: str, lang: str) -> list[dict]:
    b = context.build()
    now = clock.now()
    rows = sla.tickets(context.session(), b.models, context.policy(), which, now)
    names = _names(r["owner_id"] for r in rows)
    for r in rows:
        r["owner_name"] = names.get(r["owner_id"], "")
        r["url"] = show_url(sla.FEEDBACK, r["id"])
        for f in (sla.PRIORITY, sla.STATUS, sla.DISPATCH):
            r[f"{f}_label"] = _label(sla.FEEDBACK, f, r.get(f))
        r["response_left"] = sla.time_left(r[sla.RESPONSE_DUE], r[sla.RESPONDED], now, lang)
        r["resolve_left"] = sla.time_left(r[sla.RESOLVE_DUE], r[sla.RESOLVED], now, lang)
    return rows


class SlaView(BaseView):
    route_base = "/crm/sla"
    default_view = "index"
    class_permission_name = "sla"
    method_permission_name = {"index": "read"}
    base_permissions = ["can_read"]

    @expose("/")
    @has_access
    def index(self):
        b = context.build()
        lang = current_lang()
        counts = sla.counts(context.session(), b.models, context.policy())
        title = b.registry.entity(sla.FEEDBACK).title if sla.FEEDBACK in b.models.models else None
        return self.render_template(
            "crm/sla.html", t=t, counts=counts, breached=_ticket_rows("breached", lang),
            soon=_ticket_rows("soon", lang), title_field=title, cap=sla.LIST_LIMIT)


# -- dashboard boxes -----------------------------------------------------------------------------------

def render_notifications_widget(build: Any, actor: Any) -> str:
    lang = actor.lang
    table = build.models.system["notification"]
    n = notifications.unread_count(build.db.session, table, actor.user_id)
    rows = [r for r in _notice_rows(actor.user_id, lang, limit=5) if not r["read"]]
    href = url_for("NotificationsView.index")
    items = "".join(
        f'<li>{escape(r["text"])}</li>' if not r["url"] else
        f'<li><a href="{escape(r["url"])}">{escape(r["text"])}</a></li>' for r in rows)
    return (f'<p class="crm-notifications-count"><a href="{escape(href)}">'
            f'{escape(t("未读通知", "Unread notifications"))}: <strong>{n}</strong></a></p>'
            + (f'<ul class="crm-notifications-latest">{items}</ul>' if items else ""))


def render_followups_widget(build: Any, actor: Any) -> str:
    order, modes = followup_modes()
    owner_id, departments = modes[order[0]]
    agenda = followups.agenda(build.db.session, build.models, context.policy(), clock.today(),
                              owner_id=owner_id, departments=departments, limit=0)
    c = agenda.counts
    who = {"team": t("本部门", "My department"), "mine": t("我的客户", "My customers"),
           "all": t("全部", "Everyone")}[order[0]]
    href = url_for("FollowUpsView.index")
    cells = [(t("已逾期", "Overdue"), c.get("overdue", 0), "danger"), (t("今日到期", "Due today"), c.get("today", 0), "warning"),
             (t(f"未来 {followups.UPCOMING_DAYS} 天", f"Next {followups.UPCOMING_DAYS} days"), c.get("upcoming", 0), "info")]
    body = "".join(f'<td><span class="label label-{k}">{escape(label)}</span> '
                   f'<strong class="crm-followups-{i}">{n}</strong></td>'
                   for i, (label, n, k) in zip(("overdue", "today", "upcoming"), cells))
    return (f'<p class="text-muted">{escape(who)}</p><table class="table table-condensed crm-followups-counts">'
            f'<tr>{body}</tr></table><a href="{escape(href)}">{escape(t("查看我的跟进", "Open my follow-ups"))}</a>')


def render_sla_widget(build: Any, actor: Any) -> str:
    counts = sla.counts(build.db.session, build.models, context.policy())
    href = url_for("SlaView.index")
    cells = [("open_breached", t("超时未解决", "Breached, unresolved"), "danger"),
             ("breached_7d", t("近7天超时", "Breached in 7 days"), "warning"),
             ("due_soon", t("4小时内到期", "Due within 4 h"), "info")]
    body = "".join(f'<td><span class="label label-{k}">{escape(label)}</span> '
                   f'<strong class="crm-sla-{key}">{counts[key]}</strong></td>' for key, label, k in cells)
    return (f'<table class="table table-condensed crm-sla-counts"><tr>{body}</tr></table>'
            f'<a href="{escape(href)}">{escape(t("查看超时工单", "Open the breach list"))}</a>')


# -- time left on ticket pages ---------------------------------------------------------------------

def _shown_record(entity: str):
    """The record of the show page being rendered (already loaded, in scope), else None."""
    if not (request.endpoint or "").endswith(".show") or "pk" not in (request.view_args or {}):
        return None
    try:
        pk = int(request.view_args["pk"])
    except (TypeError, ValueError):
        return None
    if request.endpoint.rsplit(".", 1)[0] != _view_name(entity):
        return None
    return context.session().get(context.build().models.model(entity), pk)


def _view_name(entity: str) -> str:
    return "".join(p.capitalize() for p in entity.split("_")) + "View"


def due_formatter(due_field: str, done_field: str):
    """A due time as people read it: the time, and on the ticket's page what it means now."""
    def fmt(value):
        if value is None:
            return ""
        text = value.strftime("%Y-%m-%d %H:%M")
        record = _shown_record(sla.FEEDBACK)
        if record is None:
            return text
        lang = current_lang()
        left = sla.time_left(value, getattr(record, done_field, None), clock.now(), lang)
        if not left:
            return text
        css = "text-danger" if ("超时" in left or "overdue" in left or "late" in left) else "text-success"
        shown = f"({left})" if lang == "en" else f"（{left}）"
        return Markup('{} <span class="crm-time-left {}">{}</span>').format(text, css, shown)
    return fmt


def register_process_views(appbuilder: Any, build: Any) -> None:
    """Menus, screens and the ticket formatters (called from the built-in plugin's
    ``crm_register_views``, after the generated screens)."""
    registry = build.registry
    models = build.models

    def category(name: str) -> dict:
        menu = registry.menu(name)
        if menu is None:
            return {}
        return {"category": menu.name, "category_label": lazy(menu.label), "category_icon": menu.icon or "fa-folder"}

    if followups.enabled(models):
        appbuilder.add_view(FollowUpsView, "followups", label=lazy(FOLLOWUPS_LABEL), icon="fa-calendar-check-o",
                            **category(registry.entity(followups.CUSTOMER).menu or ""))
    if sla.enabled(models):
        appbuilder.add_view(SlaView, "sla", label=lazy(SLA_LABEL), icon="fa-clock-o",
                            **category(registry.entity(sla.FEEDBACK).menu or ""))
        view = next((v for v in appbuilder.baseviews if getattr(v, "entity", None) is not None
                     and v.entity.name == sla.FEEDBACK and hasattr(v, "show")), None)
        if view is not None:
            view.formatters_columns = {**view.formatters_columns,
                                       sla.RESPONSE_DUE: due_formatter(sla.RESPONSE_DUE, sla.RESPONDED),
                                       sla.RESOLVE_DUE: due_formatter(sla.RESOLVE_DUE, sla.RESOLVED)}
    appbuilder.add_view(NotificationsView, "notifications", label=lazy(NOTIFICATIONS_LABEL), icon="fa-bell")
    appbuilder.add_api(NotificationsApi)
