"""Generated CRUD screens: one Flask-AppBuilder ModelView per entity, writing through the services."""
from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView, ModelView, expose
from flask_appbuilder.security.decorators import has_access
from wtforms import SelectField
from flask_appbuilder.fieldwidgets import Select2Widget

from crm_meta.errors import RecordError, RecordNotFound, ValidationFailed
from crm_meta.metadata.model import Entity, Field, Label
from crm_meta.web import context
from crm_meta.web.datamodel import entity_interface
from crm_meta.web.forms import build_form, enum_choices, form_values, record_values, user_name
from crm_meta.web.i18n import current_lang, lazy, t

RECORD_SECTION = Label("记录信息", "Record")
PERMISSIONS = ("can_read", "can_create", "can_update", "can_delete")
METHOD_PERMISSIONS = {
    "list": "read", "show": "read", "get": "read", "get_list": "read", "info": "read", "lookup": "read",
    "add": "create", "post": "create",
    "edit": "update", "put": "update",
    "delete": "delete", "action": "delete", "action_post": "delete",
}


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


class EntityModelView(ModelView):
    """Base of the generated views; class attributes are filled in per entity by ``make_view``."""

    entity: Entity
    list_template = "crm/list.html"
    page_size = 25
    # Only the routes that go through the records service: FAB's bulk-action routes load rows
    # without row filters and its download route serves files; neither is offered.
    include_route_methods = {"list", "show", "add", "edit", "delete"}

    # list --------------------------------------------------------------------------------------
    def _get_list_widget(self, filters, actions=None, order_column="", order_direction="",
                         page=None, page_size=None, widgets=None, **kwargs):
        widgets = widgets or {}
        page_size = page_size or self.page_size
        if not order_column and self.base_order:
            order_column, order_direction = self.base_order
        joined = filters.get_joined_filters(self._base_filters)
        count, rows = self.datamodel.query(joined, order_column, order_direction, page=page,
                                           page_size=page_size, search=request.args.get("q"))
        widgets["list"] = self.list_widget(
            label_columns=self.label_columns, include_columns=self.list_columns,
            value_columns=self.datamodel.get_values(rows, self.list_columns),
            order_columns=self.order_columns, formatters_columns=self.formatters_columns,
            page=page, page_size=page_size, count=count, pks=self.datamodel.get_keys(rows),
            actions=actions or self.actions, filters=filters,
            modelview_name=self.__class__.__name__, **kwargs)
        return widgets

    def render_template(self, template, **kwargs):
        kwargs.setdefault("quick_search", request.args.get("q", ""))
        kwargs.setdefault("entity", self.entity)
        kwargs.setdefault("lang", current_lang())
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
            write()
            context.session().commit()
        except ValidationFailed as exc:
            context.session().rollback()
            self._errors_to_form(form, exc)
        except RecordError as exc:  # version conflicts, refusals
            context.session().rollback()
            flash(str(exc), "danger")
        else:
            flash(t("已保存", "Saved"), "success")
            return True
        return False

    def _add(self):
        form = self.add_form.refresh()
        if request.method == "POST" and form.validate():
            service = context.records(self.entity.name)
            if self._save(form, lambda: service.create(form_values(form, self.entity))):
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
            form = self.edit_form.refresh()
            if form.validate() and self._save(form, lambda: service.update(
                    pk, form_values(form, self.entity), expected_version=form.version.data)):
                return None
        else:
            self.update_redirect()
            form = self.edit_form(data=record_values(obj, self.entity))
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

    @expose("/delete/<pk>", methods=["POST"])
    @has_access
    def delete(self, pk):
        self._delete(pk)
        return self.post_delete_redirect()


def make_view(entity: Entity, models) -> type[EntityModelView]:
    """The ModelView class for one entity."""
    fields = entity.fields
    sections = []
    for s in entity.form:
        sections.append((lazy(s.label), {"fields": [n for n in s.fields if entity.field(n).editable]}))
    record_info = [f.name for f in fields if f.type == "autonumber"]
    show_sections = [(lazy(s.label), {"fields": [display_column(entity.field(n)) for n in s.fields]})
                     for s in entity.form]
    system = [display_column(entity.field(n)) for n in ("created_at", "created_by", "updated_at", "updated_by")]
    if record_info and show_sections:
        label, spec = show_sections[0]
        show_sections[0] = (label, {"fields": record_info + spec["fields"]})
    show_sections.append((lazy(RECORD_SECTION), {"fields": system}))
    columns = {display_column(f): lazy(f.label) for f in fields}
    filters = [n for n in entity.search_fields] + [
        n for n in entity.filter_fields
        if not entity.field(n).is_multi and entity.field(n).storage != "fk_entity" and n not in entity.search_fields]
    extra_search = {n: SelectField(lazy(entity.field(n).label), choices=enum_choices(entity.field(n)),
                                   widget=Select2Widget(), validate_choice=False)
                    for n in filters if entity.field(n).storage == "code"}
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
        query = entity_interface(ent, models).text_search(context.session().query(model), request.args.get("q"))
        title = getattr(model, ent.field(ent.title).column) if ent.title else model.id
        rows = query.order_by(title, model.id).offset((page - 1) * 20).limit(21).all()
        return jsonify({"results": [{"id": r.id, "text": str(r)} for r in rows[:20]],
                        "pagination": {"more": len(rows) > 20}})
