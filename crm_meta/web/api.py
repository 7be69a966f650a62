"""Generated REST API: one ModelRestApi per entity at /api/v1/<entity>/, writing through the services."""
from __future__ import annotations

from typing import Any

from flask import request
from flask_appbuilder.api import ModelRestApi, expose, safe
from flask_appbuilder.api.schemas import get_item_schema, get_list_schema
from flask_appbuilder.const import API_FILTERS_RIS_KEY
from flask_appbuilder.exceptions import FABException
from flask_appbuilder.security.decorators import permission_name

from crm_meta.errors import RecordError, RecordNotFound, ValidationFailed, VersionConflict
from crm_meta.metadata.model import Entity
from crm_meta.web import context
from crm_meta.web.datamodel import entity_interface
from crm_meta.web.i18n import current_lang
from crm_meta.web.rison import rison
from crm_meta.web.security import BearerFirstApi, protect
from crm_meta.web.schemas import RowWriter, build_schemas
from crm_meta.web.views import METHOD_PERMISSIONS, PERMISSIONS, class_name, display_column, refused_filters

MAX_PAGE_SIZE = 100


class EntityApi(BearerFirstApi, ModelRestApi):
    """Base of the generated APIs; reads and writes go through the records service."""

    entity: Entity
    row_writer: RowWriter  # the list's rows as show_model_schema + the access policy have them
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
        return context.policy().project(self.entity.name, self.show_model_schema.dump(obj))

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

    def _handle_filters_args(self, rison_args: dict):
        """FAB's, on a filter set of this request (FAB clears and refills one shared by all requests)."""
        if not hasattr(self._filters, "blank"):
            return super()._handle_filters_args(rison_args)
        filters = self._filters.blank()
        filters.rest_add_filters(rison_args.get(API_FILTERS_RIS_KEY, []))
        return filters.get_joined_filters(self._base_filters)

    def _list_args(self, args: dict):
        """(filters, order column, order direction), or a 400 response: unknown columns, or columns
        whose filtering or sorting would probe values the user may not see."""
        try:
            filters = self._handle_filters_args(args)
            order_column, order_direction = self._handle_order_args(args)
        except FABException as exc:
            return self.response_400(message=str(exc))
        refused = refused_filters(self.entity.name, [f["col"] for f in args.get("filters", [])
                                                     if isinstance(f, dict) and "col" in f]
                                  + ([order_column] if order_column else []))
        if refused:
            return self.response_400(message=f"You may not filter or sort on: {', '.join(refused)}")
        return filters, order_column, order_direction

    def get_list_headless(self, **kwargs):
        args = kwargs.get("rison", {})
        parsed = self._list_args(args)
        if not isinstance(parsed, tuple):
            return parsed
        filters, order_column, order_direction = parsed
        page, page_size = self._handle_page_args(args)
        policy = context.policy()
        hidden = policy.access(self.entity.name).hidden
        # one statement: the page, its capped count and the codes of the multi-value fields shown
        count, rows, codes = self.datamodel.page(
            filters, order_column, order_direction, page=page, page_size=page_size,
            search=request.args.get("search"), codes=[n for n in self.datamodel.multi_fields if n not in hidden])
        return self.response(200, count=count, ids=[r.id for r in rows],
                             result=self.row_writer.rows(rows, policy, self.entity.name, codes))

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
        reason = body.pop("_reason", None)
        if version is None and request.headers.get("If-Match"):
            version = request.headers["If-Match"].strip('W/"')
        service = context.records(self.entity.name)
        try:
            service.get(pk)
            if version is None:
                return self.response(428, message="Send the record's `version` (or an If-Match header) "
                                                  "so that a concurrent change is not overwritten")
            obj = service.update(pk, body, expected_version=version,
                                 reason=reason if isinstance(reason, str) else None)
            context.session().commit()
        except RecordError as exc:
            return self._error(exc)
        if service.pending:  # key fields wait for approval; the rest (if any) is saved
            return self.response(202, id=obj.id, result=self._dump(obj), pending=service.pending,
                                 message="Changes of key fields wait for approval")
        return self.response(200, id=obj.id, result=self._dump(obj))

    def reveal_headless(self, pk):
        field = request.args.get("field", "")
        service = context.records(self.entity.name)
        policy = context.policy()
        try:
            obj = service.get(pk)
        except RecordNotFound:
            return self.response_404()
        access = policy.access(self.entity.name)
        if not self.entity.has_field(field) or field in access.hidden:
            return self.response_400(message=f"Unknown field: {field}")
        if field not in access.masked:
            return self.response_400(message=f"Field {field} is not masked")
        if not access.can("reveal"):
            return self.response_403()
        value = getattr(obj, self.entity.field(field).column)
        from crm_meta.services import audit

        audit.log_event(context.session(), context.build().models.system, context.actor(), "reveal",
                        entity=self.entity.name, record_id=obj.id, field=field)
        context.session().commit()
        return self.response(200, id=obj.id, field=field, value=value)

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
                      filters:
                        type: object
                        description: >-
                          The filters the caller may use per column, each with its `operator` for
                          `q=(filters:!((col:…,opr:…,value:…)))` and its name in the caller's language
                        additionalProperties: {type: array, items: {type: object}}
            401: {$ref: '#/components/responses/401'}
        """
        lang = current_lang()
        dicts = context.dictionaries()
        access = context.policy().access(self.entity.name)
        fields = []
        for f in self.entity.fields:
            if f.name in access.hidden:
                continue
            item = {"name": f.name, "label": f.label.get(lang), "type": f.type, "required": f.required,
                    "readonly": not f.editable or f.name in access.readonly}
            if f.custom is not None:  # a plugin's field type, edited like its base
                item["base"] = f.base
            if f.name in access.masked:
                item["masked"] = True
            if f.needs_approval:
                item["needs_approval"] = True
            if f.dictionary:
                item["dictionary"] = f.dictionary
                item["choices"] = [{"code": i.code, "label": i.label.get(lang)}
                                   for i in dicts.items(f.dictionary, group=f.group)]
            if f.storage == "fk_entity":
                item["entity"] = f.entity  # choose values through GET /api/v1/<entity>/?search=…
            if f.max_length:
                item["max_length"] = f.max_length
            fields.append(item)
        allowed = [f"can_{a}" for a in sorted(access.actions)]
        offered = self._filters.get_search_filters()
        searchable = [c for c in self.search_columns if c not in access.hidden and c in offered]
        refused = set(refused_filters(self.entity.name, searchable))
        filters = {c: [{"name": str(f.name), "operator": f.arg_name} for f in offered[c]]
                   for c in searchable if c not in refused}
        return self.response(200, fields=fields, permissions=allowed, filters=filters)

    @expose("/export", methods=["GET"])
    @protect()
    @safe
    @permission_name("export")
    @rison(get_list_schema)
    def export(self, **kwargs):
        """Export the records you may read (same filters and search as the list) as CSV or Excel
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
          - in: query
            name: format
            schema: {type: string, enum: [csv, xlsx], default: csv}
          responses:
            200:
              description: The file (hidden fields left out, sensitive values masked; audited)
            400: {$ref: '#/components/responses/400'}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
        """
        from crm_meta.web.export import export_response

        parsed = self._list_args(kwargs.get("rison", {}))
        if not isinstance(parsed, tuple):
            return parsed
        filters, order_column, order_direction = parsed
        fmt = request.args.get("format", "csv")
        if fmt not in ("csv", "xlsx"):
            return self.response_400(message="format must be csv or xlsx")
        return export_response(self.entity, self.datamodel, filters, order_column, order_direction,
                               request.args.get("search"), fmt)

    @expose("/import", methods=["POST"])
    @protect()
    @safe
    @permission_name("import")
    def import_file(self):
        """Import records from an uploaded Excel or CSV file (all rows or none)
        ---
        post:
          requestBody:
            required: true
            content:
              multipart/form-data:
                schema:
                  type: object
                  properties:
                    file: {type: string, format: binary}
          responses:
            200:
              description: Every row was created
              content:
                application/json:
                  schema: {type: object, properties: {created: {type: integer}}}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
            422:
              description: Nothing was imported; each problem names its row, column and reason
        """
        from crm_meta.services.importing import ImportRefused
        from crm_meta.web.importer import run_import

        try:
            created = run_import(self.entity.name, request.files.get("file"))
        except ImportRefused as exc:
            return self.response(422, message="Nothing was imported", errors=[p.as_dict() for p in exc.problems])
        except RecordError as exc:
            return self._error(exc)
        return self.response(200, created=created)

    @expose("/<int:pk>/transition", methods=["POST"])
    @protect()
    @safe
    @permission_name("transition")
    def transition(self, pk):
        """Move a stage or status field along its pipeline
        ---
        post:
          parameters:
          - in: path
            schema: {type: integer}
            name: pk
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: object
                  required: [to]
                  properties:
                    to: {type: string, description: the target state code}
                    comment: {type: string}
                    field: {type: string, description: which pipeline field, when the entity has several}
                    version: {type: integer, description: the version you read (optional)}
                  additionalProperties: {description: values of fields the target state requires}
          responses:
            200:
              description: Moved
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      result: {$ref: '#/components/schemas/{{self.__class__.__name__}}.get'}
            403: {$ref: '#/components/responses/403'}
            404: {$ref: '#/components/responses/404'}
            409: {description: Someone else changed the record since you read it}
            422: {description: Not an allowed move, or requirements missing (each named)}
        """
        from crm_meta.services import pipelines

        body, error = self._body()
        if error:
            return error
        target = body.pop("to", None)
        if not isinstance(target, str) or not target:
            return self.response_400(message="Send the target state as `to`")
        comment, field, version = body.pop("comment", None), body.pop("field", None), body.pop("version", None)
        service = context.records(self.entity.name)
        try:
            obj = pipelines.transition(service, pk, target, field=field if isinstance(field, str) else None,
                                       comment=comment if isinstance(comment, str) else None, data=body,
                                       expected_version=version)
            context.session().commit()
        except RecordError as exc:
            return self._error(exc)
        return self.response(200, id=obj.id, result=self._dump(obj))

    @expose("/<int:pk>/transitions", methods=["GET"])
    @protect()
    @safe
    @permission_name("transitions")
    def transitions(self, pk):
        """The moves you may take from the record's current state(s), with what each requires
        ---
        get:
          parameters:
          - in: path
            schema: {type: integer}
            name: pk
          responses:
            200:
              description: Available transitions
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      result: {type: array, items: {type: object}}
            404: {$ref: '#/components/responses/404'}
        """
        from crm_meta.services import pipelines

        try:
            obj = context.records(self.entity.name).get(pk)
        except RecordNotFound:
            return self.response_404()
        lang = current_lang()
        dicts = context.dictionaries()
        out = []
        for p, t in pipelines.available(context.policy(), context.build().registry, self.entity.name, obj):
            f = self.entity.field(p.field_name)
            out.append({"field": f.name, "from": getattr(obj, f.column), "to": t.target,
                        "label": (t.label.get(lang) if t.label else dicts.label(f.dictionary, t.target, lang)),
                        "requires": list(t.requires), "comment_required": t.comment_required})
        return self.response(200, result=out)

    @expose("/<int:pk>/reveal", methods=["POST"])
    @protect()
    @safe
    @permission_name("reveal")
    def reveal(self, pk):
        """Reveal the full value of a masked field (audited; counts toward the reveal alert)
        ---
        post:
          parameters:
          - in: path
            schema: {type: integer}
            name: pk
          - in: query
            name: field
            required: true
            schema: {type: string}
          responses:
            200:
              description: The value in full
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      id: {type: integer}
                      field: {type: string}
                      value: {type: string}
            400: {$ref: '#/components/responses/400'}
            401: {$ref: '#/components/responses/401'}
            403: {$ref: '#/components/responses/403'}
            404: {$ref: '#/components/responses/404'}
        """
        return self.reveal_headless(pk)

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
    show = schemas["show"]()
    columns = [display_column(entity.field(n)) for n in entity.list_fields]
    searchable = [n if entity.field(n).is_multi else entity.field(n).column  # tags: filtered by the codes held
                  for n in dict.fromkeys(entity.search_fields + entity.filter_fields)]
    attrs = {
        "entity": entity,
        "resource_name": entity.name,
        "datamodel": entity_interface(entity, models),
        "class_permission_name": entity.name,
        "method_permission_name": METHOD_PERMISSIONS,
        "base_permissions": list(PERMISSIONS),
        "openapi_spec_tag": f"{entity.label.en} {entity.label.zh}",
        "list_columns": [c for c in columns if c not in ("tags",)],
        "show_model_schema": show,
        "row_writer": RowWriter(show),
        "list_model_schema": type(f"{prefix}List", (schemas["show"],), {})(),
        "add_model_schema": schemas["add"](),
        "edit_model_schema": schemas["edit"](),
        "search_columns": searchable,
        "order_columns": [entity.field(n).column for n in entity.list_fields
                          if not entity.field(n).is_multi and not entity.field(n).is_fk] + ["id", "created_at"],
        "base_order": (entity.field(entity.sort_field).column, "desc" if entity.sort_desc else "asc"),
        "include_route_methods": {"get", "get_list", "post", "put", "delete", "info", "reveal", "export",
                                  "import_file", "transition", "transitions"},
    }
    return type(prefix, (EntityApi,), attrs)
