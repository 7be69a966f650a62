"""Approvals of key-field changes: a change by someone who may not approve it waits as a request.

The request keeps old → new values, who asked and why. The record's owner or a user allowed to
``approve`` the entity decides (never the requester); an approval applies the change through the
records service — the same policy, validation, hooks and audit as any edit — and is refused when
the field changed since the request was made (the request was about a value that is gone).
"""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from crm_meta.db.tables import utcnow
from crm_meta.errors import PermissionDenied, RecordNotFound, ValidationFailed, VersionConflict

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


def _plain(value: Any) -> Any:
    """A stored value as JSON (dates ISO, decimals as text, lists as lists)."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _audit(session, models, actor, action: str, entity: str, record_id: int, detail: dict) -> None:
    from crm_meta.services import audit

    audit.log_event(session, models.system, actor, action, entity=entity, record_id=record_id, detail=detail)


def request(session, models, entity, obj: Any, changes: dict[str, tuple[Any, Any]], actor, reason: str | None) -> int:
    """Store a pending change request for ``changes`` ({field: (old, new)}); its id."""
    table = models.system["change_request"]
    plain = {name: [_plain(old), _plain(new)] for name, (old, new) in changes.items()}
    result = session.execute(table.insert().values(
        entity=entity.name, record_id=obj.id, changes=plain, reason=(reason or "").strip()[:1000] or None,
        status=PENDING, requested_by_id=actor.user_id, requested_at=utcnow()))
    request_id = result.inserted_primary_key[0]
    _audit(session, models, actor, "change_requested", entity.name, obj.id,
           {"request": request_id, "fields": sorted(changes)})
    owner = getattr(obj, entity.field(entity.owner_field).column, None) if entity.owner_field else None
    if owner is not None and owner != actor.user_id:  # the owner decides: tell them something waits
        fields_zh = "、".join(entity.field(n).label.zh for n in sorted(changes))
        fields_en = ", ".join(entity.field(n).label.en for n in sorted(changes))
        from crm_meta.services.records import title_of  # (records imports this module)

        title = title_of(entity, obj)
        _notify(session, models, owner, APPROVAL_REQUEST, request_id, entity.name, obj.id,
                f"{entity.label.zh}「{title}」的{fields_zh}修改等待您审批",
                f"A change of {fields_en} on {entity.label.en} \"{title}\" waits for your approval")
    return request_id


APPROVAL_REQUEST, APPROVAL_DECIDED = "approval_request", "approval_decided"  # notification kinds


def _notify(session, models, user_id: int, kind: str, request_id: int, entity: str, record_id: int,
            zh: str, en: str) -> None:
    from crm_meta.services import notifications

    notifications.notify(session, models.system["notification"], [{
        "user_id": user_id, "kind": kind, "dedupe_key": f"change_request:{request_id}", "message": zh,
        "entity": entity, "record_id": record_id, "detail": {"zh": zh, "en": en, "request": request_id}}])


def pending_for(session, models, entity: str, record_id: int) -> list[dict]:
    """The pending requests of one record, oldest first."""
    table = models.system["change_request"]
    rows = session.execute(select(table).where(table.c.entity == entity, table.c.record_id == record_id,
                                               table.c.status == PENDING).order_by(table.c.id))
    return [dict(r._mapping) for r in rows]


def visible_requests(session, models, policy, status: str | None = PENDING, limit: int = 200) -> list[dict]:
    """Requests on records the user may see, newest first (what the approvals screen lists)."""
    table = models.system["change_request"]
    stmt = select(table).order_by(table.c.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(table.c.status == status)
    rows = [dict(r._mapping) for r in session.execute(stmt)]
    out = []
    by_entity: dict[str, set[int]] = {}
    for r in rows:
        by_entity.setdefault(r["entity"], set()).add(r["record_id"])
    visible: dict[str, set[int]] = {}
    for entity, ids in by_entity.items():
        if entity not in models.models or not policy.can(entity, "read"):
            visible[entity] = set()
            continue
        model = models.model(entity)
        stmt = policy.scope(entity, select(model.id).where(model.id.in_(sorted(ids))), model)
        visible[entity] = set(session.execute(stmt).scalars())
    for r in rows:
        if r["record_id"] in visible.get(r["entity"], ()):
            out.append(r)
    return out


def _load(session, models, request_id: Any, lang: str) -> dict:
    table = models.system["change_request"]
    try:
        request_id = int(request_id)
    except (TypeError, ValueError):
        raise RecordNotFound("记录不存在" if lang == "zh" else "Record not found") from None
    row = session.execute(select(table).where(table.c.id == request_id)).first()
    if row is None:
        raise RecordNotFound("记录不存在" if lang == "zh" else "Record not found")
    return dict(row._mapping)


def decide(session, models, request_id: Any, actor, policy, *, approve: bool, comment: str | None = None) -> dict:
    """Approve (apply) or reject a pending request; raises RecordError subclasses when refused."""
    from crm_meta.services.records import RecordService, title_of

    zh = not actor.lang.startswith("en")
    req = _load(session, models, request_id, actor.lang)
    service = RecordService(session, models, req["entity"], actor, policy=policy)
    obj = service.get(req["record_id"])  # 404 unless the decider may see the record
    if req["status"] != PENDING:
        raise ValidationFailed({"_": ["此申请已处理" if zh else "This request has already been decided"]})
    if req["requested_by_id"] == actor.user_id:
        raise PermissionDenied("不能审批自己提交的申请" if zh else "You cannot decide on your own request")
    if not service.may_approve(obj):
        raise PermissionDenied("您无权审批此记录的变更" if zh else "You may not approve changes of this record")
    table = models.system["change_request"]
    if approve:
        entity = models.registry.entity(req["entity"])
        moved = [name for name, (old, _new) in req["changes"].items()
                 if _plain(service._current(obj, entity.field(name))) != old]
        if moved:
            raise VersionConflict(
                ("申请提交后这些字段已被修改：" if zh else "These fields changed since the request was made: ")
                + ", ".join(entity.field(n).label.get(actor.lang) for n in moved))
        service.approving = True
        service.update(obj.id, {name: new for name, (_old, new) in req["changes"].items()})
    session.execute(table.update().where(table.c.id == req["id"]).values(
        status=APPROVED if approve else REJECTED, decided_by_id=actor.user_id, decided_at=utcnow(),
        comment=(comment or "").strip()[:1000] or None))
    _audit(session, models, actor, "approved" if approve else "rejected", req["entity"], req["record_id"],
           {"request": req["id"], "fields": sorted(req["changes"])})
    req.update(status=APPROVED if approve else REJECTED, decided_by_id=actor.user_id)
    if req["requested_by_id"] is not None:  # the requester learns the outcome
        entity = models.registry.entity(req["entity"])
        title = title_of(entity, obj)
        verdict_zh, verdict_en = ("已批准", "approved") if approve else ("被驳回", "rejected")
        _notify(session, models, req["requested_by_id"], APPROVAL_DECIDED, req["id"], req["entity"], obj.id,
                f"您对{entity.label.zh}「{title}」的修改申请{verdict_zh}",
                f"Your change request on {entity.label.en} \"{title}\" was {verdict_en}")
    return req
