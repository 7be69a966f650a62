"""The data dictionary screen (数据字典, /crm/dictionaries/) and its REST API (/api/v1/dictionaries/).

Administrators add items, edit labels, order, group and attrs, move items up and down and
deactivate / activate them; the logic and its checks are crm_meta/services/dictionary_admin.py.
Permission ``dictionaries`` (``can_read`` / ``can_write``): superuser roles get it, other roles
only when their ``screens`` name it (as for the audit screen). A change counts from the next
request (items are read per request), and the YAML sync at start-up keeps it (origin ``admin``).

``register_dictionary_admin(appbuilder)`` adds the screen (menu: Security, beside the audit
trail) and the API.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from flask import abort, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.api import BaseApi, safe
from flask_appbuilder.security.decorators import has_access, permission_name, protect

from crm_meta.metadata.model import Label
from crm_meta.services import dictionary_admin as svc
from crm_meta.web import context
from crm_meta.web.audit_views import SECURITY_CATEGORY
from crm_meta.web.i18n import current_lang, lazy, t
from crm_meta.web.security import ScreenApi

TITLE = Label("数据字典", "Data dictionary")
PERMISSION = "dictionaries"
PERMISSIONS = ["can_read", "can_write"]
METHODS = {"index": "read", "show": "read", "add": "write", "edit": "write", "active": "write", "move": "write",
           "get_list": "read", "get_items": "read", "post_item": "write", "put_item": "write",
           "post_order": "write"}


def _write(change: Callable[[Any, Any, Any, Any, str], Any]) -> Any:
    """Run one change of the service as this request's user and commit; roll back on any error."""
    b, session = context.build(), context.session()
    try:
        result = change(session, b.models.system, b.registry, context.actor(), current_lang())
        from crm_meta.services import followups

        # A grade's new cadence days move its customers' next follow-up dates, in the same transaction
        # (one UPDATE per changed grade; nothing when no cadence changed).
        followups.apply_cadence_changes(session, b.models)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        g.pop("crm_dicts", None)  # this request's copy of the items is stale now
    return result


def _items(name: str) -> list[dict]:
    b = context.build()
    return svc.items(context.session(), b.models.system["dict_item"], b.registry, name, current_lang())


# -- screen --------------------------------------------------------------------------------------

def _form_data(form, *, new: bool) -> dict[str, Any]:
    """A posted item form as the service takes it (blank order: after the last / unchanged)."""
    data: dict[str, Any] = {"label": {"zh": form.get("label_zh", ""), "en": form.get("label_en", "")},
                            "active": "active" in form, "group": form.get("group", ""),
                            "attrs": form.get("attrs", "")}
    if new:
        data["code"] = form.get("code", "").strip()
    if form.get("order", "").strip():
        data["order"] = form["order"]
    return data


def _form_values(item: dict | None = None, form=None) -> dict[str, Any]:
    """What the item form shows: the posted values after a refusal, else the item's."""
    if form is not None:
        return {k: form.get(k, "") for k in ("code", "label_zh", "label_en", "order", "group", "attrs")} | \
            {"active": "active" in form}
    if item is None:
        return {"code": "", "label_zh": "", "label_en": "", "order": "", "group": "", "attrs": "", "active": True}
    return {"code": item["code"], "label_zh": item["label"]["zh"], "label_en": item["label"]["en"],
            "order": item["order"], "group": item["group"] or "", "active": item["active"],
            "attrs": json.dumps(item["attrs"], ensure_ascii=False) if item["attrs"] else ""}


class DictionaryAdminView(BaseView):
    route_base = "/crm/dictionaries"
    default_view = "index"
    class_permission_name = PERMISSION
    method_permission_name = METHODS
    base_permissions = PERMISSIONS

    def _dictionary(self, name: str):
        registry = context.build().registry
        if not registry.has_dictionary(name):
            abort(404)
        return registry.dictionary(name)

    def _page(self, name: str, *, values=None, errors=None, status: int = 200):
        d = self._dictionary(name)
        lang = current_lang()
        return self.render_template(
            "crm/dictionary.html", dictionary=d, dict_label=d.label.get(lang), items=_items(name),
            values=values or _form_values(), errors=errors or {}, title=TITLE.get(lang), t=t), status

    @expose("/")
    @has_access
    def index(self):
        b = context.build()
        rows = svc.overview(context.session(), b.models.system["dict_item"], b.registry)
        lang = current_lang()
        return self.render_template("crm/dictionaries.html", dictionaries=rows, lang=lang,
                                    title=TITLE.get(lang), t=t)

    @expose("/<name>/")
    @has_access
    def show(self, name: str):
        return self._page(name)

    @expose("/<name>/add", methods=["POST"])
    @has_access
    def add(self, name: str):
        self._dictionary(name)
        data = _form_data(request.form, new=True)
        try:
            item = _write(lambda s, sy, r, a, lang: svc.add_item(s, sy, r, a, name, data, lang))
        except svc.DictionaryRefused as exc:
            flash(t("未保存，请修改标出的问题", "Not saved: see the problems marked below"), "danger")
            return self._page(name, values=_form_values(form=request.form), errors=exc.problems, status=400)
        flash(t(f"已添加选项 {item['code']}", f"Item {item['code']} added"), "success")
        return redirect(url_for("DictionaryAdminView.show", name=name))

    @expose("/<name>/<code>/edit", methods=["GET", "POST"])
    @has_access
    def edit(self, name: str, code: str):
        d = self._dictionary(name)
        item = next((i for i in _items(name) if i["code"] == code), None)
        if item is None:
            abort(404)
        values, errors, status = _form_values(item), {}, 200
        if request.method == "POST":
            data = _form_data(request.form, new=False)
            try:
                _write(lambda s, sy, r, a, lang: svc.edit_item(s, sy, r, a, name, code, data, lang))
            except svc.DictionaryRefused as exc:
                values, errors, status = _form_values(form=request.form), exc.problems, 400
                values["code"] = code
            else:
                flash(t(f"已保存选项 {code}", f"Item {code} saved"), "success")
                return redirect(url_for("DictionaryAdminView.show", name=name))
        lang = current_lang()
        return self.render_template("crm/dictionary_item.html", dictionary=d, dict_label=d.label.get(lang),
                                    values=values, errors=errors, title=TITLE.get(lang), t=t), status

    @expose("/<name>/<code>/active", methods=["POST"])
    @has_access
    def active(self, name: str, code: str):
        self._dictionary(name)
        on = request.form.get("active") == "1"
        try:
            _write(lambda s, sy, r, a, lang: svc.set_active(s, sy, r, a, name, code, on, lang))
        except svc.DictionaryNotFound:
            abort(404)
        flash(t(f"已启用 {code}", f"{code} activated") if on else
              t(f"已停用 {code}：旧记录仍显示其名称，但不再可选", f"{code} deactivated: old records still show it, "
                "forms no longer offer it"), "success")
        return redirect(url_for("DictionaryAdminView.show", name=name))

    @expose("/<name>/<code>/move", methods=["POST"])
    @has_access
    def move(self, name: str, code: str):
        self._dictionary(name)
        step = -1 if request.form.get("direction") == "up" else 1
        try:
            _write(lambda s, sy, r, a, lang: svc.move(s, sy, r, a, name, code, step, lang))
        except svc.DictionaryNotFound:
            abort(404)
        return redirect(url_for("DictionaryAdminView.show", name=name))


ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "pattern": svc.CODE.pattern, "description": "New items only; never changes"},
        "label": {"type": "object", "properties": {"zh": {"type": "string"}, "en": {"type": "string"}}},
        "order": {"type": "integer"},
        "active": {"type": "boolean"},
        "group": {"type": "string", "nullable": True},
        "attrs": {"type": "object", "description": "e.g. a grade's cadence_days"},
    },
}


# -- REST -----------------------------------------------------------------------------------------

class DictionariesApi(ScreenApi, BaseApi):
    resource_name = "dictionaries"
    class_permission_name = PERMISSION
    method_permission_name = METHODS
    base_permissions = PERMISSIONS
    component_schemas = {"DictionaryItem": ITEM_SCHEMA}
    openapi_spec_tag = "Dictionaries 数据字典"

    def _refused(self, exc: svc.DictionaryRefused):
        return self.response(exc.status, message=str(exc), errors=exc.problems)

    def _change(self, change):
        try:
            return None, _write(change)
        except svc.DictionaryRefused as exc:
            return self._refused(exc), None

    @expose("/", methods=["GET"])
    @protect()
    @safe
    @permission_name("get_list")
    def get_list(self):
        """The dictionaries: name, label and how many items (all / active)
        ---
        get:
          responses:
            200:
              description: Every declared dictionary
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      result:
                        type: array
                        items:
                          type: object
                          properties:
                            name: {type: string}
                            label: {type: object, properties: {zh: {type: string}, en: {type: string}}}
                            items: {type: integer}
                            active: {type: integer}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
        """
        b = context.build()
        return self.response(200, result=svc.overview(context.session(), b.models.system["dict_item"], b.registry))

    @expose("/<name>/items", methods=["GET"])
    @protect()
    @safe
    @permission_name("get_items")
    def get_items(self, name: str):
        """All items of a dictionary, inactive ones included (`active: false`), in display order
        ---
        get:
          parameters:
          - {in: path, name: name, required: true, schema: {type: string}}
          responses:
            200:
              description: The items
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      result: {type: array, items: {$ref: '#/components/schemas/DictionaryItem'}}
            403: {$ref: '#/components/responses/403'}
            404: {$ref: '#/components/responses/404'}
        """
        try:
            return self.response(200, result=_items(name))
        except svc.DictionaryRefused as exc:
            return self._refused(exc)

    @expose("/<name>/items", methods=["POST"])
    @protect()
    @safe
    @permission_name("post_item")
    def post_item(self, name: str):
        """Add an item; it is offered on forms from the next request
        ---
        post:
          parameters:
          - {in: path, name: name, required: true, schema: {type: string}}
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: '#/components/schemas/DictionaryItem'}
          responses:
            201: {description: Added; the item as stored}
            400: {description: 'Invalid item (message, and errors by key: code, label, order, attrs …)'}
            403: {$ref: '#/components/responses/403'}
            404: {$ref: '#/components/responses/404'}
        """
        body = self._body()
        error, item = self._change(lambda s, sy, r, a, lang: svc.add_item(s, sy, r, a, name, body, lang))
        return error or self.response(201, result=item)

    @expose("/<name>/items/<code>", methods=["PUT"])
    @protect()
    @safe
    @permission_name("put_item")
    def put_item(self, name: str, code: str):
        """Change an item's label, order, active flag, group or attrs (the keys sent); never its code
        ---
        put:
          parameters:
          - {in: path, name: name, required: true, schema: {type: string}}
          - {in: path, name: code, required: true, schema: {type: string}}
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: '#/components/schemas/DictionaryItem'}
          responses:
            200: {description: Saved; the item as stored}
            400: {description: Invalid values (message, and errors by key)}
            403: {$ref: '#/components/responses/403'}
            404: {$ref: '#/components/responses/404'}
        """
        body = self._body()
        error, item = self._change(lambda s, sy, r, a, lang: svc.edit_item(s, sy, r, a, name, code, body, lang))
        return error or self.response(200, result=item)

    @expose("/<name>/order", methods=["POST"])
    @protect()
    @safe
    @permission_name("post_order")
    def post_order(self, name: str):
        """Reorder: the listed codes first, in that order, the others after them as they were
        ---
        post:
          parameters:
          - {in: path, name: name, required: true, schema: {type: string}}
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [codes]
                  properties:
                    codes: {type: array, items: {type: string}}
          responses:
            200: {description: The items in their new order}
            400: {description: Unknown or repeated codes}
            403: {$ref: '#/components/responses/403'}
            404: {$ref: '#/components/responses/404'}
        """
        body = self._body()
        codes = body.get("codes") if body is not None else None
        error, rows = self._change(lambda s, sy, r, a, lang: svc.reorder(s, sy, r, a, name, codes, lang))
        return error or self.response(200, result=rows)



def register_dictionary_admin(appbuilder: Any) -> None:
    """Add the data dictionary screen (Security menu, beside the audit trail) and its REST API."""
    appbuilder.add_view(DictionaryAdminView, PERMISSION, label=lazy(TITLE), icon="fa-book",
                        category=SECURITY_CATEGORY, category_icon="fa-cogs")
    appbuilder.add_api(DictionariesApi)
