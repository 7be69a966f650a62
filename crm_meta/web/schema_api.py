"""REST for the model screens: ``/api/v1/schema/`` — the overlay, plan an operation, apply it.

Operations are the bodies of crm_meta/services/schema_ops.py, written in the dictionary language;
the same functions as the screens (crm_meta/web/schema_admin.py) plan and apply them. Administrators
only (permission ``schema``); a cookie-authenticated write needs the CSRF token, a bearer token not.
"""
from __future__ import annotations

from flask_appbuilder import expose
from flask_appbuilder.api import BaseApi, safe
from flask_appbuilder.security.decorators import permission_name, protect

from crm_meta.errors import MigrationError, SchemaErrors
from crm_meta.services import schema_forms as forms
from crm_meta.services import schema_ops as ops
from crm_meta.web import context
from crm_meta.web.schema_admin import METHODS, PERMISSION, PERMISSIONS, apply_op, error_lines, plan_op, service
from crm_meta.web.security import ScreenApi

OP_SCHEMA = {
    "type": "object",
    "required": ["op"],
    "properties": {
        "op": {"type": "string", "enum": list(ops.OPS)},
        "entity": {"type": "string", "description": "The entity of a field operation"},
        "name": {"type": "string", "description": "The field (field operations) or the entity (entity operations)"},
        "field": {"type": "object", "description": "add_field: the field's body in the dictionary language "
                  "(type, label {zh, en}, required, default, length, dictionary, entity, pattern, unique, indexed, "
                  "mask …); update_field: the keys to change (null removes one; active: false deactivates)"},
        "list": {"type": "boolean", "description": "Field shown as a list column"},
        "search": {"type": "boolean", "description": "Field searched by the list's search box"},
        "filters": {"type": "boolean", "description": "Field offered as a list filter"},
        "spec": {"type": "object", "description": "add_entity: the entity's body (label, menu, fields, list, "
                 "search, filters, title, owner …)"},
        "allow_destructive": {"type": "boolean", "description": "apply only: also run steps that lose data "
                              "(a backup is taken first)"},
        "expect": {"type": "array", "items": {"type": "string"}, "description": "apply only: the steps' texts "
                   "of the plan you reviewed; if the plan differs now, nothing is applied (409)"},
    },
    "example": {"op": "add_field", "entity": "customer", "name": "linkedin", "list": True, "search": True,
                "field": {"type": "url", "label": {"zh": "领英主页", "en": "LinkedIn page"}}},
}


class SchemaApi(ScreenApi, BaseApi):
    resource_name = "schema"
    class_permission_name = PERMISSION
    method_permission_name = METHODS
    base_permissions = PERMISSIONS
    component_schemas = {"SchemaOperation": OP_SCHEMA}
    openapi_spec_tag = "Schema 模型"

    def _refused(self, exc: Exception):
        if isinstance(exc, MigrationError):
            return self.response(409, message=str(exc))
        lines = error_lines(exc, located=True)
        message = "the data dictionary would be invalid; nothing was changed" if isinstance(exc, SchemaErrors) \
            else "; ".join(lines)
        return self.response(400, message=message, errors=lines)

    @expose("/", methods=["GET"])
    @protect()
    @safe
    @permission_name("get_overview")
    def get_overview(self):
        """The admins' overlay (custom fields and entities) and every entity with its fields
        ---
        get:
          responses:
            200:
              description: The overlay, the entities (each field with origin yaml / field / entity, active,
                placement) and the schema generation
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      generation: {type: integer}
                      overlay:
                        type: object
                        properties:
                          fields: {type: array, items: {type: object}}
                          entities: {type: array, items: {type: object}}
                      entities: {type: array, items: {type: object}}
                      types: {type: array, items: {type: string}}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
        """
        from crm_meta.services.schema_changes import generation

        svc = service()
        overlay = svc.overlay()
        with svc.engine.connect() as conn:
            gen = generation(conn)
        return self.response(200, generation=gen, overlay=forms.overlay_dict(overlay), types=list(context.build().registry.field_types.names if context.build().registry.field_types else ops.TYPES),
                             entities=forms.entity_rows(context.build().registry, overlay))

    @expose("/plan", methods=["POST"])
    @protect()
    @safe
    @permission_name("post_plan")
    def post_plan(self):
        """What an operation would change in the database; nothing is changed
        ---
        post:
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: '#/components/schemas/SchemaOperation'}
          responses:
            200:
              description: The plan (steps with safe / loss / blocked, warnings, limits) and its text report
            400: {description: 'Invalid operation or dictionary (message, errors: one line each)'}
            403: {$ref: '#/components/responses/403'}
        """
        try:
            op, outcome = plan_op(self._body())
        except (ops.OpRefused, SchemaErrors) as exc:
            return self._refused(exc)
        return self.response(200, op=op.body, plan=outcome.plan.as_dict(), report=outcome.plan.report())

    @expose("/apply", methods=["POST"])
    @protect()
    @safe
    @permission_name("post_apply")
    def post_apply(self):
        """Apply an operation: the tables, the overlay and the schema generation change in one transaction
        ---
        post:
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: '#/components/schemas/SchemaOperation'}
          responses:
            200: {description: 'Applied: the plan that ran and the new generation (every worker serves it from
              its next request)'}
            400: {description: 'Invalid operation or dictionary (message, errors: one line each); nothing changed'}
            403: {$ref: '#/components/responses/403'}
            409: {description: 'Blocked, destructive without allow_destructive, or changed since the plan;
              nothing changed'}
        """
        body = self._body()
        if body is None:
            return self._refused(ops.OpRefused(["the body must be a JSON object with an 'op'"]))
        body = dict(body)
        allow, expect = body.pop("allow_destructive", False), body.pop("expect", None)
        if isinstance(expect, dict):  # the plan as POST /plan returned it
            expect = [c.get("text") for c in expect.get("changes") or () if isinstance(c, dict)]
        if not isinstance(allow, bool) or not (expect is None or isinstance(expect, list)):
            return self._refused(ops.OpRefused(["allow_destructive must be true or false, expect a list of the "
                                                "plan's step texts"]))
        try:
            op, outcome = apply_op(body, allow_destructive=allow, expect=expect)
        except (ops.OpRefused, SchemaErrors, MigrationError) as exc:
            return self._refused(exc)
        return self.response(200, op=op.body, plan=outcome.plan.as_dict(), generation=outcome.generation,
                             backup=outcome.backup.name if outcome.backup else None)
