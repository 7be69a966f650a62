"""Generated REST API: one ModelRestApi per entity at /api/v1/<entity>/, writing through the services."""
from __future__ import annotations

from typing import Any

from flask import request
from flask_appbuilder.api import ModelRestApi, expose, safe
from flask_appbuilder.api.schemas import get_item_schema, get_list_schema
from flask_appbuilder.exceptions import FABException
from flask_appbuilder.security.decorators import permission_name, protect

from crm_meta.errors import RecordError, RecordNotFound, ValidationFailed, VersionConflict
from crm_meta.metadata.model import Entity
from crm_meta.web import context
from crm_meta.web.datamodel import entity_interface
from crm_meta.web.i18n import current_lang
from crm_meta.web.rison import rison
from crm_meta.web.schemas import build_schemas
from crm_meta.web.views import METHOD_PERMISSIONS, PERMISSIONS, class_name, display_column

MAX_PAGE_SIZE = 100


class EntityApi(ModelRestApi):
    """Base of the generated APIs; reads and writes go through the records service."""

    entity: Entity
    allow_browser_login = True
    page_size = 25
    max_page_size = MAX_PAGE_SIZE

    def _error(self, exc: RecordError):
        context.session().rollback()
        if isinstance(exc, ValidationFailed):
            return self.response_422(message=exc.errors)
        if isinstance(exc, RecordNotFound):
            return self.response_404()
        return self.response(exc.status, message=str(exc))

    def _dump(self, obj: Any) -> dict:
        return self.show_model_schema.dump(obj)

    def _body(self):
        if not request.is_json:
            return None, self.response_400(message="Request is not JSON")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return None, self.response_400(message="The body must be a JSON object")
        return body, None

    def get_headless(self, pk, **kwargs):
        try:
            obj = context.records(self.entity.name).get(pk)
        except RecordNotFound:
            return self.response_404()
        resp = self.response(200, id=obj.id, result=self._dump(obj))
        resp.headers["ETag"] = f'"{obj.version}"'
        return resp

    def get_list_headless(self, **kwargs):
        args = kwargs.get("rison", {})
        try:
            filters = self._handle_filters_args(args)
            order_column, order_direction = self._handle_order_args(args)
        except FABException as exc:
            return self.response_400(message=str(exc))
        page, page_size = self._handle_page_args(args)
        count, rows = self.datamodel.query(filters, order_column, order_direction, page=page,
                                           page_size=page_size, search=request.args.get("search"))
        return self.response(200, count=count, ids=[r.id for r in rows],
                             result=self.show_model_schema.dump(rows, many=True))

    def post_headless(self):
        body, error = self._body()
        if error:
            return error
        try:
            obj = context.records(self.entity.name).create(body)
            context.session().commit()
        except RecordError as exc:
            return self._error(exc)
        return self.response(201, id=obj.id, result=self._dump(obj))

    def put_headless(self, pk):
        body, error = self._body()
        if error:
            return error
        version = body.pop("version", None)
        if version is None and request.headers.get("If-Match"):
            version = request.headers["If-Match"].strip('W/"')
        service = context.records(self.entity.name)
        try:
            service.get(pk)
            if version is None:
                return self.response(428, message="Send the record's `version` (or an If-Match header) "
                                                  "so that a concurrent change is not overwritten")
            obj = service.update(pk, body, expected_version=version)
            context.session().commit()
        except RecordError as exc:
            return self._error(exc)
        return self.response(200, id=obj.id, result=self._dump(obj))

    def delete_headless(self, pk):
        try:
            context.records(self.entity.name).delete(pk, expected_version=request.args.get("version"))
            context.session().commit()
        except RecordError as exc:
            return self._error(exc)
        return self.response(200, message="OK")

    @expose("/<int:pk>", methods=["GET"])
    @protect()
    @safe
    @permission_name("get")
    @rison(get_item_schema)
    def get(self, pk, **kwargs):
        """Get one record
        ---
        get:
          parameters:
          - in: path
            schema: {type: integer}
            name: pk
          responses:
            200:
              description: The record
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      result: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}
            401: {$ref: '#/components/responses/401'}
            404: {$ref: '#/components/responses/404'}
        """
        return self.get_headless(pk, **kwargs)

    @expose("/", methods=["GET"])
    @protect()
    @safe
    @permission_name("get")
    @rison(get_list_schema)
    def get_list(self, **kwargs):
        """List records (count is capped at 10,000)
        ---
        get:
          parameters:
          - in: query
            name: q
            content:
              application/json:
                schema: {$ref: '#/components/schemas/get_list_schema'}
          - in: query
            name: search
            schema: {type: string}
            description: Text searched in the entity's search fields
          responses:
            200:
              description: A page of records
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      count: {type: integer}
                      ids: {type: array, items: {type: integer}}
                      result:
                        type: array
                        items: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}
            400: {$ref: '#/components/responses/400'}
            401: {$ref: '#/components/responses/401'}
        """
        return self.get_list_headless(**kwargs)

    @expose("/<pk>", methods=["PUT"])
    @protect()
    @safe
    @permission_name("put")
    def put(self, pk):
        """Change a record (send the `version` you read)
        ---
        put:
          parameters:
          - in: path
            schema: {type: integer}
            name: pk
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: '#/components/schemas/{{self.__class__.__name__}}.put'}
          responses:
            200:
              description: Changed
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      result: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}
            400: {$ref: '#/components/responses/400'}
            401: {$ref: '#/components/responses/401'}
            404: {$ref: '#/components/responses/404'}
            409: {description: Someone else changed the record since you read it}
            422: {$ref: '#/components/responses/422'}
            428: {description: The request did not say which version it read}
        """
        return self.put_headless(pk)

    @expose("/_info", methods=["GET"])
    @protect()
    @safe
    @permission_name("info")
    def info(self, **kwargs):
        """What a client needs to build a form: fields, labels, choices and the caller's rights
        ---
        get:
          responses:
            200:
              description: Field metadata of this entity
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      fields: {type: array, items: {type: object}}
                      permissions: {type: array, items: {type: string}}
            401: {$ref: '#/components/responses/401'}
        """
        lang = current_lang()
        dicts = context.dictionaries()
        fields = []
        for f in self.entity.fields:
            item = {"name": f.name, "label": f.label.get(lang), "type": f.type, "required": f.required,
                    "readonly": not f.editable}
            if f.dictionary:
                item["dictionary"] = f.dictionary
                item["choices"] = [{"code": i.code, "label": i.label.get(lang)}
                                   for i in dicts.items(f.dictionary, group=f.group)]
            if f.storage == "fk_entity":
                item["entity"] = f.entity  # choose values through GET /api/v1/<entity>/?search=…
            if f.max_length:
                item["max_length"] = f.max_length
            fields.append(item)
        sm = self.appbuilder.sm
        allowed = [p for p in self.base_permissions if sm.has_access(p, self.class_permission_name)]
        return self.response(200, fields=fields, permissions=allowed)

    @expose("/", methods=["POST"])
    @protect()
    @safe
    @permission_name("post")
    def post(self):
        """Create a record
        ---
        post:
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: '#/components/schemas/{{self.__class__.__name__}}.post'}
          responses:
            201:
              description: Created
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      result: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}
            400: {$ref: '#/components/responses/400'}
            401: {$ref: '#/components/responses/401'}
            422: {$ref: '#/components/responses/422'}
        """
        return self.post_headless()


def make_api(entity: Entity, models) -> type[EntityApi]:
    prefix = class_name(entity, "Api")
    schemas = build_schemas(entity, prefix)
    columns = [display_column(entity.field(n)) for n in entity.list_fields]
    searchable = [entity.field(n).column for n in
                  dict.fromkeys(entity.search_fields + entity.filter_fields)
                  if not entity.field(n).is_multi]
    attrs = {
        "entity": entity,
        "resource_name": entity.name,
        "datamodel": entity_interface(entity, models),
        "class_permission_name": entity.name,
        "method_permission_name": METHOD_PERMISSIONS,
        "base_permissions": list(PERMISSIONS),
        "openapi_spec_tag": f"{entity.label.en} {entity.label.zh}",
        "list_columns": [c for c in columns if c not in ("tags",)],
        "show_model_schema": schemas["show"](),
        "list_model_schema": type(f"{prefix}List", (schemas["show"],), {})(),
        "add_model_schema": schemas["add"](),
        "edit_model_schema": schemas["edit"](),
        "search_columns": searchable,
        "order_columns": [entity.field(n).column for n in entity.list_fields
                          if not entity.field(n).is_multi and not entity.field(n).is_fk] + ["id", "created_at"],
        "base_order": (entity.field(entity.sort_field).column, "desc" if entity.sort_desc else "asc"),
        "include_route_methods": {"get", "get_list", "post", "put", "delete", "info"},
    }
    return type(prefix, (EntityApi,), attrs)
