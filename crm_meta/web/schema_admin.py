"""The model screens (模型, /crm/schema/): custom fields and custom entities, planned then applied.

Administrators see every entity with its fields (those of ``schemas/`` read-only), add a field, change
a custom field's labels, options and placement, deactivate / reactivate it (column and data stay) or
delete it (drops the column), and add or delete whole entities. Every submission first shows the PLAN
— the steps the database would take, what a destructive one loses, what blocks one — and asks; the
confirmation applies exactly that plan (``expect``: a change made meanwhile is refused) through the
schema service (crm_meta/services/schema_changes.py) in one transaction, with an audit entry
(``schema_change``). The next request in every worker runs on the new dictionary (crm_meta/web/live.py).

Operations are the bodies of crm_meta/services/schema_ops.py, shared with the REST API
(crm_meta/web/schema_api.py). Permission ``schema`` (``can_read`` / ``can_write``): superuser roles, and
roles whose ``screens`` name it — as for the audit screen.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access

from crm_meta.errors import MigrationError, SchemaErrors
from crm_meta.metadata.model import Label
from crm_meta.services import audit
from crm_meta.services import schema_forms as forms
from crm_meta.services import schema_ops as ops
from crm_meta.web import context
from crm_meta.web.audit_views import SECURITY_CATEGORY
from crm_meta.web.i18n import current_lang, lazy, t

if TYPE_CHECKING:  # pragma: no cover
    from crm_meta.db.plan import Plan

TITLE = Label("模型", "Model")
PERMISSION = "schema"
PERMISSIONS = ["can_read", "can_write"]
AUDIT_ACTION = "schema_change"
METHODS = {"index": "read", "entity": "read", "add_field": "write", "edit_field": "write", "field_active": "write",
           "delete_field": "write", "new_entity": "write", "delete_entity": "write", "apply": "write",
           "get_overview": "read", "post_plan": "write", "post_apply": "write"}


# -- the service, as this app sees it ---------------------------------------------------------------------

def service():
    """The schema service on this app's database, dictionary files and backup directory."""
    from flask_appbuilder.security.sqla.models import User

    from crm_meta.services.schema_changes import SchemaChanges

    b = context.build()
    return SchemaChanges.for_config(b.db.engine, current_app.config, b.models.plugins, current_app.instance_path,
                                    User)


def taken_names() -> set[str]:
    """Names the CRM's own URLs, screens and APIs use (a new entity may not take them)."""
    names = {r.rule.split("/")[1] for r in current_app.url_map.iter_rules() if r.rule.count("/") > 1}
    for v in current_app.appbuilder.baseviews:
        names |= {getattr(v, "class_permission_name", None), getattr(v, "resource_name", None)}
    return {n for n in names if n} - {e.name for e in context.build().registry.entities}


def make_op(body: Any):
    """(Op, service) for an operation body, checked against this app's dictionary and the stored overlay."""
    svc = service()
    return ops.build_op(body, context.build().registry, svc.overlay(), taken_names()), svc


def plan_op(body: Any):
    """(Op, Outcome): what the operation would do; nothing changes. Raises OpRefused / SchemaErrors."""
    op, svc = make_op(body)
    return op, svc.plan(op.change, tables=op.tables)


def expected(texts: list[str]) -> "Plan":
    from crm_meta.db.plan import Change, Plan  # Alembic: imported when a plan is made, not at start-up

    return Plan([Change("", "", str(text), True) for text in texts], [], "")


def apply_op(body: Any, *, allow_destructive: bool = False, expect: list[str] | None = None):
    """(Op, Outcome): apply the operation — exactly the plan ``expect`` (the steps' texts) when given,
    else the plan of this moment — with its audit entry, in one transaction. Raises OpRefused,
    SchemaErrors or MigrationError (blocked, destructive not allowed, changed since the plan)."""
    from crm_meta.services.schema_changes import generation

    op, svc = make_op(body)
    if expect is None:
        expect = [c.text for c in svc.plan(op.change, tables=op.tables).plan.changes]
    actor = context.actor()
    context.session().commit()  # this request holds no transaction (and no lock) while the tables change

    def record(conn, registry, models) -> None:
        audit.log_event(conn, models.system, actor, AUDIT_ACTION, entity=op.entity, field=op.name, alerts=False,
                        detail={"op": op.body, "changes": expect, "allow_destructive": allow_destructive,
                                "generation": generation(conn) + 1})

    outcome = svc.apply(op.change, allow_destructive=allow_destructive, user_id=actor.user_id, tables=op.tables,
                        expect=expected(expect), also=record)
    return op, outcome


def error_lines(exc: Exception, *, located: bool = False) -> list[str]:
    """What to show for a refusal: each dictionary issue (with its file place when ``located``)."""
    if isinstance(exc, SchemaErrors):
        return [str(i) if located else f"{i.key.split('.fields.')[-1]}: {i.message}" if i.key else i.message
                for i in exc.issues]
    if isinstance(exc, ops.OpRefused):
        return exc.errors
    return [str(exc)]


# -- screens ------------------------------------------------------------------------------------------------

def _entity_or_404(name: str) -> dict:
    b = context.build()
    if name not in {e.name for e in b.registry.entities}:
        abort(404)
    return next(r for r in forms.entity_rows(b.registry, service().overlay()) if r["name"] == name)


def _field_values(row: dict | None, spec: dict | None = None, form=None) -> dict:
    if form is not None:
        return {k: form.get(k, "") for k in ("name", "type", "label_zh", "label_en", "default", "dictionary",
                                             "target", "length", "pattern", "format")} | \
            {k: k in form for k in ("required", "unique", "indexed", "list", "search", "filters")}
    if row is None:
        return {"type": "string", "list": True}
    spec = spec or {}
    default = spec.get("default")
    return {"name": row["name"], "type": spec.get("type", row["type"]), "label_zh": row["label"]["zh"],
            "label_en": row["label"]["en"], "required": bool(spec.get("required")),
            "default": ",".join(default) if isinstance(default, list) else
            ("" if default is None else str(default).lower() if isinstance(default, bool) else default),
            "dictionary": spec.get("dictionary", ""), "target": spec.get("entity", ""),
            "length": spec.get("length", ""), "pattern": spec.get("pattern", ""), "format": spec.get("format", ""),
            "unique": bool(spec.get("unique")), "indexed": bool(spec.get("indexed")),
            **{k: row[k] for k in ("list", "search", "filters")}}


def _choices() -> dict:
    reg, lang = context.build().registry, current_lang()
    return {"types": reg.field_types.names if reg.field_types else ops.TYPES, "dictionaries": [(d.name, d.label.get(lang)) for d in reg.dictionaries],
            "entities": [(e.name, e.label.get(lang)) for e in reg.entities],
            "menus": [(m.name, m.label.get(lang)) for m in reg.menus]}


class SchemaAdminView(BaseView):
    route_base = "/crm/schema"
    default_view = "index"
    class_permission_name = PERMISSION
    method_permission_name = METHODS
    base_permissions = PERMISSIONS

    def _render(self, template: str, status: int = 200, **kw):
        return self.render_template(template, title=TITLE.get(current_lang()), lang=current_lang(), t=t,
                                    **_choices(), **kw), status

    def _plan_page(self, body: Any, back: str, errors: list[str] | None = None, status: int = 200,
                   form_page=None):
        """Plan ``body`` and show it with the confirm button; a refusal goes back to ``form_page``."""
        try:
            op, outcome = plan_op(body)
        except (ops.OpRefused, SchemaErrors) as exc:
            if form_page is not None:
                return form_page(error_lines(exc))
            return self._render("crm/schema_plan.html", 400, op=None, plan=None, errors=error_lines(exc), back=back)
        return self._render("crm/schema_plan.html", status, op=op, plan=outcome.plan, errors=errors or [],
                            back=back, body=json.dumps(op.body, ensure_ascii=False),
                            expect=json.dumps([c.text for c in outcome.plan.changes], ensure_ascii=False))

    @expose("/")
    @has_access
    def index(self):
        rows = forms.entity_rows(context.build().registry, service().overlay())
        return self._render("crm/schema_index.html", rows=rows)

    def _entity_page(self, name: str, values: dict | None = None, errors: list[str] | None = None,
                     status: int = 200):
        return self._render("crm/schema_entity.html", status, entity=_entity_or_404(name),
                            values=values or _field_values(None), errors=errors or [])

    @expose("/<name>/")
    @has_access
    def entity(self, name: str):
        return self._entity_page(name)

    @expose("/<name>/add", methods=["POST"])
    @has_access
    def add_field(self, name: str):
        _entity_or_404(name)
        page = lambda errors: self._entity_page(name, _field_values(None, form=request.form), errors, 400)  # noqa: E731
        try:
            body = forms.field_body_from_form(request.form, entity=name, types=context.build().registry.field_types)
        except ops.OpRefused as exc:
            return page(exc.errors)
        return self._plan_page(body, url_for("SchemaAdminView.entity", name=name), form_page=page)

    @expose("/<name>/<field>/edit", methods=["GET", "POST"])
    @has_access
    def edit_field(self, name: str, field: str):
        row = next((f for f in _entity_or_404(name)["fields"] if f["name"] == field and f["custom"]), None)
        if row is None:
            abort(404)
        overlay = service().overlay()
        custom = overlay.field(name, field)
        spec = custom.spec if custom else (overlay.entity(name).spec["fields"][field])

        def page(errors, status=400):
            values = _field_values(row, spec, request.form if request.method == "POST" else None)
            values["name"] = field
            return self._render("crm/schema_field.html", status, entity=_entity_or_404(name), field=row,
                                values=values, errors=errors)

        if request.method == "GET":
            return page([], 200)
        try:
            body = forms.field_body_from_form(request.form, entity=name, name=field, new=False,
                                                  types=context.build().registry.field_types)
        except ops.OpRefused as exc:
            return page(exc.errors)
        return self._plan_page(body, url_for("SchemaAdminView.entity", name=name), form_page=page)

    @expose("/<name>/<field>/active", methods=["POST"])
    @has_access
    def field_active(self, name: str, field: str):
        on = request.form.get("active") == "1"
        body = {"op": "update_field", "entity": name, "name": field, "field": {"active": None if on else False}}
        return self._plan_page(body, url_for("SchemaAdminView.entity", name=name))

    @expose("/<name>/<field>/delete", methods=["POST"])
    @has_access
    def delete_field(self, name: str, field: str):
        body = {"op": "delete_field", "entity": name, "name": field}
        return self._plan_page(body, url_for("SchemaAdminView.entity", name=name))

    @expose("/new", methods=["GET", "POST"])
    @has_access
    def new_entity(self):
        def page(errors, status=400):
            values = dict(request.form) if request.method == "POST" else {
                "field_name": "name", "field_label_zh": "名称", "field_label_en": "Name", "owned": "y"}
            return self._render("crm/schema_new_entity.html", status, values=values, errors=errors)

        if request.method == "GET":
            return page([], 200)
        try:
            body = forms.entity_body_from_form(request.form)
        except ops.OpRefused as exc:
            return page(exc.errors)
        return self._plan_page(body, url_for("SchemaAdminView.index"), form_page=page)

    @expose("/<name>/delete", methods=["POST"])
    @has_access
    def delete_entity(self, name: str):
        return self._plan_page({"op": "delete_entity", "name": name}, url_for("SchemaAdminView.entity", name=name))

    @expose("/apply", methods=["POST"])
    @has_access
    def apply(self):
        back = request.form.get("back") or url_for("SchemaAdminView.index")
        back = back if back.startswith("/crm/schema") else url_for("SchemaAdminView.index")
        try:
            body, expect = json.loads(request.form.get("op", "")), json.loads(request.form.get("expect", ""))
            assert isinstance(expect, list)
        except (ValueError, AssertionError):
            abort(400)
        allow = request.form.get("understand") == "y"
        try:
            op, _ = make_op(body)
            if op.destructive and not allow:
                raise MigrationError(t("此修改会删除数据：请勾选“我已了解”后再确认",
                                       "This change deletes data: tick “I understand” to confirm it"))
            op, outcome = apply_op(body, allow_destructive=allow, expect=expect)
        except (ops.OpRefused, SchemaErrors, MigrationError) as exc:
            return self._plan_page(body, back, errors=error_lines(exc), status=409)
        if op.kind == "delete_entity":
            back = url_for("SchemaAdminView.index")
        elif op.kind == "add_entity":
            back = url_for("SchemaAdminView.entity", name=op.entity)
        backup = t(f"（已备份到 {outcome.backup.name}）", f" (backup: {outcome.backup.name})") if outcome.backup else ""
        flash(t(f"已应用：{op.describe()}{backup}", f"Applied: {op.describe()}{backup}"), "success")
        return redirect(back)


def register_schema_admin(appbuilder: Any) -> None:
    """Add the model screens (Security menu, beside the audit trail) and their REST API."""
    from crm_meta.web.schema_api import SchemaApi

    appbuilder.add_view(SchemaAdminView, PERMISSION, label=lazy(TITLE), icon="fa-sitemap",
                        category=SECURITY_CATEGORY, category_icon="fa-cogs")
    appbuilder.add_api(SchemaApi)
