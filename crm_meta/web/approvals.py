"""Approvals of key-field changes on screen (/crm/approvals/) and on REST (/api/v1/approvals/)."""
from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.api import BaseApi, safe
from flask_appbuilder.security.decorators import has_access, permission_name, protect

from crm_meta.errors import RecordError, RecordNotFound, ValidationFailed
from crm_meta.services import approvals
from crm_meta.services.masking import mask
from crm_meta.web import context
from crm_meta.web.i18n import current_lang, t
from crm_meta.web.security import BearerFirstApi

PERMISSIONS = ["can_read", "can_write"]
METHODS = {"index": "read", "decide": "write", "get_list": "read", "approve": "write", "reject": "write"}


def describe(rows: list[dict], lang: str) -> list[dict]:
    """Requests as people read them: field labels, values masked as the viewer sees them."""
    policy = context.policy()
    registry = context.build().registry
    from crm_meta.web.audit_views import names_of

    names = names_of("user", {r["requested_by_id"] for r in rows}, policy, registry)
    wanted: dict[str, set[int]] = {}
    for r in rows:
        if r["entity"] in context.build().models.models and r.get("record_id") is not None:
            wanted.setdefault(r["entity"], set()).add(int(r["record_id"]))
    titles = {e: names_of(e, records, policy, registry) for e, records in wanted.items()}  # "name (#id)"
    out = []
    for r in rows:
        entity = registry.entity(r["entity"]) if r["entity"] in context.build().models.models else None
        masked = policy.access(r["entity"]).masked if entity else {}
        changes = []
        for name, (old, new) in r["changes"].items():
            label = entity.field(name).label.get(lang) if entity and entity.has_field(name) else name
            kind = masked.get(name)
            changes.append({"field": name, "label": label, "old": mask(kind, old) if kind else old,
                            "new": mask(kind, new) if kind else new})
        out.append({**r, "changes": changes, "by": names.get(r["requested_by_id"], str(r["requested_by_id"])),
                    "entity_label": entity.label.get(lang) if entity else r["entity"],
                    "record_title": titles.get(r["entity"], {}).get(r.get("record_id")) or f"#{r.get('record_id')}",
                    "may_decide": r["status"] == approvals.PENDING and r["requested_by_id"] != policy.user_id})
    return out


def _decide(request_id: Any, approve: bool, comment: str | None) -> dict:
    b = context.build()
    try:
        req = approvals.decide(context.session(), b.models, request_id, context.actor(), context.policy(),
                               approve=approve, comment=comment)
        context.session().commit()
        return req
    except RecordError:
        context.session().rollback()
        raise


class ApprovalsView(BaseView):
    route_base = "/crm/approvals"
    default_view = "index"
    class_permission_name = "approvals"
    method_permission_name = METHODS
    base_permissions = PERMISSIONS

    @expose("/")
    @has_access
    def index(self):
        lang = current_lang()
        rows = describe(approvals.visible_requests(context.session(), context.build().models,
                                                   context.policy()), lang)
        return self.render_template("crm/approvals.html", requests=rows, lang=lang, t=t)

    @expose("/<int:request_id>/decide", methods=["POST"])
    @has_access
    def decide(self, request_id: int):
        approve = request.form.get("decision") == "approve"
        try:
            req = _decide(request_id, approve, request.form.get("comment"))
        except RecordNotFound:
            abort(404)
        except ValidationFailed as exc:
            flash("; ".join(m for msgs in exc.errors.values() for m in msgs), "danger")
            return redirect(request.referrer or url_for("ApprovalsView.index"))
        except RecordError as exc:
            flash(str(exc), "danger")
            return redirect(request.referrer or url_for("ApprovalsView.index"))
        flash(t("已批准，修改已生效", "Approved; the change is applied") if approve
              else t("已驳回", "Rejected"), "success")
        return redirect(request.referrer or url_for("ApprovalsView.index"))


class ApprovalsApi(BearerFirstApi, BaseApi):
    resource_name = "approvals"
    class_permission_name = "approvals"
    method_permission_name = METHODS
    base_permissions = PERMISSIONS
    openapi_spec_tag = "Approvals 审批"

    def _answer(self, request_id: int, approve: bool):
        body = request.get_json(silent=True) if request.is_json else None
        comment = body.get("comment") if isinstance(body, dict) and isinstance(body.get("comment"), str) else None
        try:
            req = _decide(request_id, approve, comment)
        except RecordNotFound:
            return self.response_404()
        except ValidationFailed as exc:
            return self.response_422(message=exc.errors)
        except RecordError as exc:
            return self.response(exc.status, message=str(exc))
        return self.response(200, id=req["id"], status=req["status"])

    @expose("/", methods=["GET"])
    @protect()
    @safe
    @permission_name("get_list")
    def get_list(self):
        """Pending change requests on records you may see
        ---
        get:
          responses:
            200:
              description: Pending requests, newest first
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      result: {type: array, items: {type: object}}
            401: {$ref: '#/components/responses/401'}
        """
        rows = describe(approvals.visible_requests(context.session(), context.build().models,
                                                   context.policy()), current_lang())
        for r in rows:
            for key in ("requested_at", "decided_at"):
                r[key] = r[key].isoformat() if r.get(key) else None
        return self.response(200, result=rows)

    @expose("/<int:request_id>/approve", methods=["POST"])
    @protect()
    @safe
    @permission_name("approve")
    def approve(self, request_id: int):
        """Approve a change request: the change is applied through the normal write path
        ---
        post:
          parameters:
          - {in: path, name: request_id, required: true, schema: {type: integer}}
          responses:
            200: {description: Approved and applied}
            403: {$ref: '#/components/responses/403'}
            404: {$ref: '#/components/responses/404'}
            409: {description: The field changed since the request was made}
        """
        return self._answer(request_id, True)

    @expose("/<int:request_id>/reject", methods=["POST"])
    @protect()
    @safe
    @permission_name("reject")
    def reject(self, request_id: int):
        """Reject a change request
        ---
        post:
          parameters:
          - {in: path, name: request_id, required: true, schema: {type: integer}}
          responses:
            200: {description: Rejected}
            403: {$ref: '#/components/responses/403'}
            404: {$ref: '#/components/responses/404'}
        """
        return self._answer(request_id, False)
