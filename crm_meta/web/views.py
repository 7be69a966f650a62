"""Generated CRUD screens: one Flask-AppBuilder ModelView per entity, writing through the services."""
from __future__ import annotations

from typing import Any

from flask import abort, flash, g, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView, ModelView, expose
from flask_appbuilder.security.decorators import has_access
from wtforms import SelectField
from flask_appbuilder.fieldwidgets import Select2Widget

from crm_meta.errors import RecordError, RecordNotFound, ValidationFailed
from crm_meta.metadata.model import Entity, Field, Label
from crm_meta.web import context
from crm_meta.web.datamodel import entity_interface
from crm_meta.services.masking import looks_masked, mask
from crm_meta.web.forms import CHANGE_REASON, build_form, enum_choices, form_values, record_values, user_name
from crm_meta.web.forms import keep_current_choices
from crm_meta.web.i18n import current_lang, lazy, t

RECORD_SECTION = Label("记录信息", "Record")
PERMISSIONS = ("can_read", "can_create", "can_update", "can_delete", "can_export", "can_import", "can_reveal",
               "can_approve")
METHOD_PERMISSIONS = {
    "list": "read", "show": "read", "get": "read", "get_list": "read", "info": "read", "lookup": "read",
    "add": "create", "post": "create",
    "edit": "update", "put": "update",
    "delete": "delete", "action": "delete", "action_post": "delete",
    "reveal": "reveal", "export": "export", "import_file": "import",
    "transition": "update", "transitions": "read", "move": "update",
}


def refused_filters(entity: str, columns) -> list[str]:
    """The filter or sort columns the user may not use (they would probe hidden or masked values)."""
    policy = context.policy()
    ent = context.build().registry.entity(entity)
    out = []
    for col in columns:
        name = col[:-3] if col.endswith("_id") and ent.has_field(col[:-3]) else col
        if ent.has_field(name) and not policy.may_filter(entity, name):
            out.append(name)
    return out


def class_name(entity: Entity, suffix: str) -> str:
    return "".join(p.capitalize() for p in entity.name.split("_")) + suffix


def display_column(f: Field) -> str:
    """The attribute a list or show page reads for a field (the relationship for links)."""
    return f.name if (f.is_fk or f.is_multi) else f.column


def _blank(fn):
    return lambda v: "" if v is None else fn(v)


def formatter(f: Field):
    """Turn stored values into what people read: labels for codes, names for users, no 'None'."""
    if f.storage == "fk_user":
        return user_name
    if f.storage == "decimal":
        return _blank(lambda v: f"{v:,.{f.scale if f.scale is not None else 2}f}")
    if f.storage in ("string", "text", "integer", "fk_entity"):
        return _blank(str)
    if f.storage == "code":
        return lambda code: context.dictionaries().label(f.dictionary, code, current_lang())
    if f.is_multi:
        return lambda codes: "、".join(context.dictionaries().label(f.dictionary, c, current_lang())
                                       for c in (codes or []))
    if f.storage == "boolean":
        return lambda v: "" if v is None else (t("是", "Yes") if v else t("否", "No"))
    if f.storage == "datetime":
        return lambda v: v.strftime("%Y-%m-%d %H:%M") if v else ""
    if f.storage == "date":
        return lambda v: v.isoformat() if v else ""
    return None


MAX_PAGE_SIZE = 100  # the largest page the list's page-size menu offers; a URL asking for more gets this


def _check_paging_args() -> None:
    """FAB reads ``page_<View>`` and ``psize_<View>`` with a bare int(): a hand-edited ``abc`` was a 500."""
    for name, value in request.args.items(multi=True):
        if ("page_" in name or "psize_" in name) and not value.isdigit():
            abort(400, description=t(f"参数 {name} 须为非负整数", f"{name} must be a whole number (0, 1, 2 …)"))


class EntityModelView(ModelView):
    """Base of the generated views; class attributes are filled in per entity by ``make_view``."""

    entity: Entity
    list_template = "crm/list.html"
    show_template = "crm/show.html"
    edit_template = "crm/edit.html"
    page_size = 25
    # Only the routes that go through the records service: FAB's bulk-action routes load rows
    # without row filters and its download route serves files; neither is offered.
    include_route_methods = {"list", "show", "add", "edit", "delete", "export", "import_file", "move"}

    # list --------------------------------------------------------------------------------------
    def _list(self, **kwargs):
        _check_paging_args()
        return super()._list(**kwargs)

    def _get_list_widget(self, filters, actions=None, order_column="", order_direction="",
                         page=None, page_size=None, widgets=None, **kwargs):
        widgets = widgets or {}
        page_size = min(page_size or self.page_size, MAX_PAGE_SIZE)
        if not order_column and self.base_order:
            order_column, order_direction = self.base_order
        refused = refused_filters(self.entity.name, [f.column_name for f, _ in filters.get_filters_values()])
        if refused:
            filters.clear_filters()
            flash(t("不能按以下字段筛选：", "You may not filter on: ") + ", ".join(
                self.entity.field(n).label.get(current_lang()) for n in refused), "warning")
        if order_column and refused_filters(self.entity.name, [order_column]):
            order_column, order_direction = self.base_order or ("", "")
        joined = filters.get_joined_filters(self._base_filters)
        count, rows = self.datamodel.query(joined, order_column, order_direction, page=page,
                                           page_size=page_size, search=request.args.get("q"))
        columns = self._visible(self.list_columns)
        widgets["list"] = self.list_widget(
            label_columns=self.label_columns, include_columns=columns,
            value_columns=self._masked_rows(self.datamodel.get_values(rows, columns)),
            order_columns=self.order_columns, formatters_columns=self.formatters_columns,
            page=page, page_size=page_size, count=count, pks=self.datamodel.get_keys(rows),
            actions=actions or self.actions, filters=filters,
            modelview_name=self.__class__.__name__, **kwargs)
        return widgets

    # access policy -------------------------------------------------------------------------
    def _visible(self, columns) -> list[str]:
        hidden = context.policy().access(self.entity.name).hidden
        return [c for c in columns if c not in hidden]

    def _masked_rows(self, rows):
        policy = context.policy()
        masked = policy.access(self.entity.name).masked
        for row in rows:
            yield {c: (mask(masked[c], v) if c in masked else v) for c, v in row.items()}

    def _fieldsets(self, fieldsets, form=None):
        """Fieldsets with only the fields this user may see (and, for a form, that the form has)."""
        hidden = context.policy().access(self.entity.name).hidden
        out = []
        for label, spec in fieldsets:
            names = [n for n in spec["fields"] if n not in hidden and (form is None or n in form)]
            if names:
                out.append((label, {**spec, "fields": names}))
        return out

    def _policy_form(self, form, obj=None):
        """Drop the fields the user may not write; put real values back where a masked one came back."""
        access = context.policy().access(self.entity.name)
        governed = {p.field_name for p in context.build().registry.pipelines_of(self.entity.name)}
        for name in list(form._fields):
            if name in access.hidden or name in access.readonly or name in governed:
                del form[name]  # pipeline fields move by transitions (the record page's buttons)
            elif obj is not None and name in access.masked and request.method == "POST":
                real = getattr(obj, self.entity.field(name).column)
                if looks_masked(access.masked[name], form[name].data, real):
                    form[name].data = real
        return form

    def _show(self, pk):
        try:
            item = context.records(self.entity.name).get(pk)
        except RecordNotFound:
            abort(404)
        widgets = self._get_show_widget(pk, item)
        self.update_redirect()
        g.crm_show = self._show_extras(item)
        return widgets

    def _show_extras(self, item) -> dict:
        """Pending key-field changes, reveal buttons and the record's history for the show page."""
        from crm_meta.services import approvals, audit
        from crm_meta.web.approvals import describe
        from crm_meta.web.audit_views import decorate, viewer_mask_of

        lang = current_lang()
        policy = context.policy()
        access = policy.access(self.entity.name)
        b = context.build()
        pending = describe(approvals.pending_for(context.session(), b.models, self.entity.name, item.id), lang)
        revealable = [{"name": n, "label": self.entity.field(n).label.get(lang),
                       "url": url_for(f"{class_name(self.entity, 'Api')}.reveal", pk=item.id, field=n)}
                      for n in access.masked if access.can("reveal") and getattr(item, n, None)]
        history = decorate(audit.history(context.session(), b.models.system, self.entity.name, item.id, limit=100,
                                         mask_of=viewer_mask_of()), lang)
        from crm_meta.services import pipelines

        dicts = context.dictionaries()
        moves = []
        for p, tr in pipelines.available(policy, b.registry, self.entity.name, item):
            f = self.entity.field(p.field_name)
            moves.append({"label": tr.label.get(lang) if tr.label else dicts.label(f.dictionary, tr.target, lang),
                          "url": url_for(f"{self.__class__.__name__}.move", pk=item.id, field=f.name, target=tr.target),
                          "danger": tr.target in ("lost", "churned", "closed")})
        statuses = []
        for row in pipelines.history(context.session(), b.models, self.entity.name, item.id):
            f = self.entity.field(row["field"]) if self.entity.has_field(row["field"]) else None
            name = (lambda c: dicts.label(f.dictionary, c, lang) if f and c else (c or ""))
            statuses.append({**row, "from_label": name(row["from_code"]), "to_label": name(row["to_code"]),
                             "field_label": f.label.get(lang) if f else row["field"]})
        return {
            "moves": moves, "statuses": statuses, "t_moves": t("流转", "Move to"),
            "t_statuses": t("状态历史", "Status history"), "t_comment": t("说明", "Comment"),
            "pending": pending, "revealable": revealable, "history": history,
            "t_pending": t("待审批的修改", "Changes waiting for approval"), "t_field": t("字段", "Field"),
            "t_old": t("原值", "Old"), "t_new": t("新值", "New"), "t_by": t("申请人", "Requested by"),
            "t_reason": t("原因", "Reason"), "t_approve": t("批准", "Approve"), "t_reject": t("驳回", "Reject"),
            "t_reveal": t("显示", "Reveal"), "t_history": t("修改历史", "History"), "t_when": t("时间", "When"),
            "t_who": t("操作人", "By"), "t_action": t("操作", "Action"),
        }

    def _get_show_widget(self, pk, item, widgets=None, actions=None, show_fieldsets=None):
        widgets = widgets or {}
        policy = context.policy()
        columns = self._visible(self.show_columns)
        values = [policy.display(self.entity.name, c, v)
                  for c, v in zip(columns, self.datamodel.get_values_item(item, columns))]
        widgets["show"] = self.show_widget(
            pk=pk, label_columns=self.label_columns, include_columns=columns, value_columns=values,
            formatters_columns=self.formatters_columns, actions=actions or self.actions,
            fieldsets=self._fieldsets(show_fieldsets or self.show_fieldsets),
            modelview_name=self.__class__.__name__)
        return widgets

    def _get_add_widget(self, form, exclude_cols=None, widgets=None):
        widgets = widgets or {}
        widgets["add"] = self.add_widget(form=form, include_cols=self.add_columns, exclude_cols=exclude_cols or [],
                                         fieldsets=self._fieldsets(self.add_fieldsets, form))
        return widgets

    def _get_edit_widget(self, form, exclude_cols=None, widgets=None):
        widgets = widgets or {}
        fieldsets = self._fieldsets(self.edit_fieldsets, form)
        if CHANGE_REASON in form:
            fieldsets.append((lazy(Label("审批", "Approval")), {"fields": [CHANGE_REASON]}))
        widgets["edit"] = self.edit_widget(form=form, include_cols=self.edit_columns,
                                           exclude_cols=exclude_cols or [], fieldsets=fieldsets)
        return widgets

    def render_template(self, template, **kwargs):
        kwargs.setdefault("quick_search", request.args.get("q", ""))
        kwargs.setdefault("entity", self.entity)
        kwargs.setdefault("lang", current_lang())
        kwargs.setdefault("crm_show", g.get("crm_show"))
        kwargs.setdefault("crm_can_export", context.policy().can(self.entity.name, "export"))
        kwargs.setdefault("crm_export_url", url_for(f"{self.__class__.__name__}.export"))
        kwargs.setdefault("crm_can_import", context.policy().can(self.entity.name, "import"))
        kwargs.setdefault("crm_import_url", url_for(f"{self.__class__.__name__}.import_file"))
        kwargs.setdefault("crm_query", request.query_string.decode("utf-8", "replace"))
        return super().render_template(template, **kwargs)

    # writes ------------------------------------------------------------------------------------
    def _errors_to_form(self, form, exc: ValidationFailed) -> None:
        for name, messages in exc.errors.items():
            if name in form:
                form[name].errors = list(form[name].errors or []) + list(messages)
            else:
                flash("; ".join(messages), "danger")

    def _save(self, form, write) -> bool:
        """Run ``write`` and commit; on refusal roll back and show why on the form. True when saved."""
        try:
            service = write()
            context.session().commit()
        except ValidationFailed as exc:
            context.session().rollback()
            self._errors_to_form(form, exc)
        except RecordError as exc:  # version conflicts, refusals
            context.session().rollback()
            flash(str(exc), "danger")
        else:
            flash(t("已保存", "Saved"), "success")
            if getattr(service, "pending", None):
                flash(t("关键字段的修改已提交审批，批准后生效", "Changes of key fields were sent for approval; "
                        "they take effect once approved"), "info")
            return True
        return False

    def _add(self):
        form = self._policy_form(self.add_form.refresh())
        if request.method == "POST" and form.validate():
            service = context.records(self.entity.name)
            if self._save(form, lambda: (service.create(form_values(form, self.entity)), service)[1]):
                return None
        if request.method == "GET":
            self.update_redirect()
        return self._get_add_widget(form=form)

    def _edit(self, pk):
        service = context.records(self.entity.name)
        try:
            obj = service.get(pk)
        except RecordNotFound:
            abort(404)
        if request.method == "POST":
            form = self._policy_form(self.edit_form.refresh(), obj)
            if form.validate() and self._save(form, lambda: (service.update(
                    pk, form_values(form, self.entity), expected_version=form.version.data,
                    reason=request.form.get(CHANGE_REASON)), service)[1]):
                return None
        else:
            self.update_redirect()
            masked = context.policy().access(self.entity.name).masked
            data = {k: (mask(masked[k], v) if k in masked else v) for k, v in record_values(obj, self.entity).items()}
            form = self._policy_form(self.edit_form(data=data))
        keep_current_choices(form, self.entity, obj)  # deactivated codes the record holds stay shown
        return self._get_edit_widget(form=form)

    def _delete(self, pk):
        service = context.records(self.entity.name)
        try:
            service.delete(pk, expected_version=request.form.get("version"))
            context.session().commit()
        except RecordNotFound:
            abort(404)
        except RecordError as exc:
            context.session().rollback()
            flash(str(exc), "danger")
        else:
            flash(t("已删除", "Deleted"), "success")

    def _to_list(self):
        return redirect(url_for(f"{self.__class__.__name__}.list"))

    def post_add_redirect(self):
        return self._to_list()

    def post_edit_redirect(self):
        return self._to_list()

    def post_delete_redirect(self):
        return self._to_list()

    @expose("/export/")
    @has_access
    def export(self):
        """The list's rows (same filters and search) as an Excel or CSV file."""
        from flask_appbuilder.urltools import get_filter_args, get_order_args

        from crm_meta.web.export import export_response

        get_filter_args(self._filters)
        refused = refused_filters(self.entity.name, [f.column_name for f, _ in self._filters.get_filters_values()])
        if refused:
            abort(400)
        order_column, order_direction = get_order_args().get(self.__class__.__name__, ("", ""))
        if not order_column or refused_filters(self.entity.name, [order_column]):
            order_column, order_direction = self.base_order or ("", "")
        return export_response(self.entity, self.datamodel, self._filters.get_joined_filters(self._base_filters),
                               order_column, order_direction, request.args.get("q"),
                               request.args.get("format", "xlsx"))

    @expose("/import/", methods=["GET", "POST"])
    @has_access
    def import_file(self):
        """Upload an Excel or CSV file: all rows are created, or none and every problem is listed."""
        from crm_meta.services.importing import ImportRefused
        from crm_meta.web.importer import run_import

        problems = []
        if request.method == "POST":
            try:
                created = run_import(self.entity.name, request.files.get("file"))
            except ImportRefused as exc:
                problems = exc.problems
            except RecordError as exc:
                flash(str(exc), "danger")
            else:
                flash(t(f"已导入 {created} 条记录", f"Imported {created} records"), "success")
                return self._to_list()
        lang = current_lang()
        return self.render_template(
            "crm/import.html", problems=problems, title=t("导入", "Import") + " — " + self.entity.label.get(lang),
            hint=t("上传 Excel（.xlsx）或 CSV 文件；列名用字段名称（与导出的表头相同）。任何一行有错误时不导入任何记录。",
                   "Upload an Excel (.xlsx) or CSV file; columns are the field labels (as an export writes "
                   "them). If any row has a problem, nothing is imported."),
            submit=t("导入", "Import"), back=url_for(f"{self.__class__.__name__}.list"), back_label=t("返回", "Back"),
            refused=t(f"未导入任何记录：发现 {len(problems)} 个问题", f"Nothing was imported: {len(problems)} problem(s)"),
            row_label=t("行", "Row"), column_label=t("列", "Column"), reason_label=t("原因", "Reason"))

    @expose("/move/<int:pk>/<field>/<target>", methods=["GET", "POST"])
    @has_access
    def move(self, pk: int, field: str, target: str):
        """A transition with its form: the fields the target state requires and a comment."""
        from crm_meta.services import pipelines

        service = context.records(self.entity.name)
        try:
            obj = service.get(pk)
        except RecordNotFound:
            abort(404)
        pipeline = context.build().registry.pipeline(self.entity.name, field)
        move = pipeline.move(getattr(obj, field), target) if pipeline else None
        if move is None or not pipelines.may_take(context.policy(), self.entity.name, move):
            flash(t("不能执行此流转", "This move is not available"), "danger")
            return redirect(url_for(f"{self.__class__.__name__}.show", pk=pk))
        form_cls = transition_form(self.entity, move)
        form = form_cls(request.form if request.method == "POST" else None,
                        data=None if request.method == "POST" else {**record_values(obj, self.entity),
                                                                    "version": obj.version})
        if request.method == "POST" and form.validate():
            data = {n: form[n].data for n in move.requires if n in form}
            try:
                pipelines.transition(service, pk, target, field=field, comment=form.comment.data,
                                     data=data, expected_version=form.version.data)
                context.session().commit()
            except ValidationFailed as exc:
                context.session().rollback()
                self._errors_to_form(form, exc)
            except RecordError as exc:
                context.session().rollback()
                flash(str(exc), "danger")
            else:
                flash(t("已流转", "Moved"), "success")
                return redirect(url_for(f"{self.__class__.__name__}.show", pk=pk))
        lang = current_lang()
        f = self.entity.field(field)
        dicts = context.dictionaries()
        return self.render_template(
            "crm/transition.html", form=form, record=obj, entity=self.entity,
            title=f"{self.entity.label.get(lang)} {obj}: {dicts.label(f.dictionary, getattr(obj, field), lang)} → "
                  f"{dicts.label(f.dictionary, target, lang)}",
            submit=t("确认流转", "Move"), back=url_for(f"{self.__class__.__name__}.show", pk=pk),
            back_label=t("返回", "Back"))

    @expose("/delete/<pk>", methods=["POST"])
    @has_access
    def delete(self, pk):
        self._delete(pk)
        return self.post_delete_redirect()


def transition_form(entity: Entity, move) -> type:
    """A form with the fields a move requires, a comment and the version read."""
    from flask_appbuilder.fieldwidgets import BS3TextAreaFieldWidget
    from flask_appbuilder.forms import DynamicForm
    from wtforms import HiddenField, TextAreaField
    from wtforms.validators import DataRequired, Optional

    from crm_meta.web.forms import form_field

    attrs: dict[str, Any] = {}
    for name in move.requires:
        field = form_field(entity.field(name), entity.name)
        field.kwargs["validators"] = [DataRequired()] + [v for v in field.kwargs.get("validators", [])
                                                         if not isinstance(v, Optional)]
        attrs[name] = field
    attrs["comment"] = TextAreaField(lazy(Label("说明", "Comment")), widget=BS3TextAreaFieldWidget(),
                                     validators=[DataRequired()] if move.comment_required else [Optional()])
    attrs["version"] = HiddenField()
    return type(f"{class_name(entity, 'Move')}Form", (DynamicForm,), attrs)


def make_view(entity: Entity, models) -> type[EntityModelView]:
    """The ModelView class for one entity."""
    fields = entity.fields
    sections = []
    for s in entity.form:
        sections.append((lazy(s.label), {"fields": [n for n in s.fields if entity.field(n).editable]}))
    show_sections = [(lazy(s.label), {"fields": [display_column(entity.field(n)) for n in s.fields]})
                     for s in entity.form]
    shown = {c for _, spec in show_sections for c in spec["fields"]}
    # record numbers lead the page, unless a section already shows them (once is enough)
    record_info = [display_column(f) for f in fields if f.type == "autonumber" and display_column(f) not in shown]
    system = [display_column(entity.field(n)) for n in ("created_at", "created_by", "updated_at", "updated_by")]
    if record_info and show_sections:
        label, spec = show_sections[0]
        show_sections[0] = (label, {"fields": record_info + spec["fields"]})
    show_sections.append((lazy(RECORD_SECTION), {"fields": system}))
    columns = {display_column(f): lazy(f.label) for f in fields}
    filters = [n for n in entity.search_fields] + [
        n for n in entity.filter_fields
        if entity.field(n).storage != "fk_entity" and n not in entity.search_fields]
    extra_search = {display_column(entity.field(n)): SelectField(
        lazy(entity.field(n).label), choices=enum_choices(entity.field(n)), widget=Select2Widget(), validate_choice=False)
        for n in filters if entity.field(n).storage == "code" or entity.field(n).is_multi}
    attrs: dict[str, Any] = {
        "entity": entity,
        "route_base": f"/{entity.name}",
        "datamodel": entity_interface(entity, models),
        "class_permission_name": entity.name,
        "method_permission_name": METHOD_PERMISSIONS,
        "base_permissions": list(PERMISSIONS),
        "list_title": lazy(entity.label),
        "show_title": lazy(entity.label),
        "add_title": lazy(entity.label),
        "edit_title": lazy(entity.label),
        "label_columns": columns,
        "list_columns": [display_column(entity.field(n)) for n in entity.list_fields],
        "show_fieldsets": show_sections,
        "add_fieldsets": sections,
        "edit_fieldsets": sections,
        "add_form": build_form(entity, edit=False),
        "edit_form": build_form(entity, edit=True),
        "search_columns": [display_column(entity.field(n)) for n in filters],
        "search_form_extra_fields": extra_search,
        "formatters_columns": {display_column(f): fm for f in fields if (fm := formatter(f))},
        "base_order": (display_column(entity.field(entity.sort_field)), "desc" if entity.sort_desc else "asc"),
        "description_columns": {f.name: lazy(f.help) for f in fields if f.help},
    }
    return type(class_name(entity, "View"), (EntityModelView,), attrs)




class LookupView(BaseView):
    """Matching records for reference dropdowns, a page at a time (never the whole table)."""

    route_base = "/crm"
    class_permission_name = "lookup"
    method_permission_name = {"lookup": "read"}
    base_permissions = ["can_read"]
    default_view = "lookup"

    @expose("/lookup/<entity>")
    @has_access
    def lookup(self, entity: str):
        models = context.build().models
        if entity not in models.models:
            abort(404)
        ent = models.registry.entity(entity)
        model = models.model(entity)
        try:
            page = max(1, int(request.args.get("page", 1)))
        except ValueError:
            page = 1
        if not context.policy().can(entity, "read"):
            abort(404)
        datamodel = entity_interface(ent, models)
        query = datamodel.scoped(datamodel.text_search(context.session().query(model), request.args.get("q")))
        title = getattr(model, ent.field(ent.title).column) if ent.title else model.id
        rows = query.order_by(title, model.id).offset((page - 1) * 20).limit(21).all()
        return jsonify({"results": [{"id": r.id, "text": str(r)} for r in rows[:20]],
                        "pagination": {"more": len(rows) > 20}})
