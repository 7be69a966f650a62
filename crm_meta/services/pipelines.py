"""Pipelines: a stage or status field moves only through its declared transitions.

A transition checks who may take it, what the target state requires (fields, evidence such as a
won opportunity, a comment), applies its effects (``set``), writes the record through the records
service (same validation, optimistic lock, hooks and audit as any edit), stores a status-history
row and, when declared, notifies the owner (``notify_owner``) and gives the record's customer a
follow-up task (``follow_up``) — all in the caller's transaction, after every check passed. Plain edits cannot change a pipeline field.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import and_, exists, select

from crm_meta.errors import PermissionDenied, ValidationFailed
from crm_meta.metadata.model import Label, Pipeline, Transition
from crm_meta.services import clock
from crm_meta.services.validation import message


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def may_take(policy, entity: str, transition: Transition) -> bool:
    """The user may update the entity and, when the move names roles, holds one of them."""
    if not policy.can(entity, "update"):
        return False
    if transition.roles is None or policy.superuser:
        return True
    return bool(transition.roles & policy.principal.roles)


def available(policy, registry, entity: str, obj: Any) -> list[tuple[Pipeline, Transition]]:
    """The moves the user may take from the record's current state(s)."""
    out = []
    for p in registry.pipelines_of(entity):
        for t in p.moves_from(getattr(obj, p.field_name)):
            if may_take(policy, entity, t):
                out.append((p, t))
    return out


def history(session, models, entity: str, record_id: int) -> list[dict]:
    """A record's status history, oldest first."""
    t = models.system["status_history"]
    rows = session.execute(select(t).where(t.c.entity == entity, t.c.record_id == int(record_id))
                           .order_by(t.c.id))
    return [dict(r._mapping) for r in rows]


def record(session, models, entity: str, record_id: int, field: str, source: str | None, target: str,
           actor, comment: str | None = None) -> None:
    session.execute(models.system["status_history"].insert().values(
        entity=entity, record_id=record_id, field=field, from_code=source, to_code=target,
        user_id=actor.user_id, username=actor.username, at=clock.now(), comment=(comment or None)))


def _pick(registry, entity: str, target: str, field: str | None, dictionaries) -> Pipeline | None:
    candidates = [p for p in registry.pipelines_of(entity) if field in (None, p.field_name)]
    if field is None and len(candidates) > 1:
        entity_ = registry.entity(entity)
        candidates = [p for p in candidates if dictionaries.get(entity_.field(p.field_name).dictionary, target)]
    return candidates[0] if len(candidates) == 1 else None


def _evidence_holds(service, obj: Any, evidence) -> bool:
    """One alternative of ``requires_one_of`` on the record ``obj`` being moved."""
    if evidence.field_name:
        return not _empty(getattr(obj, service.entity.field(evidence.field_name).column, None))
    registry = service.models.registry
    related = registry.entity(evidence.related)
    link = next((f for f in related.fields if f.storage == "fk_entity" and f.entity == service.entity.name), None)
    if link is None:
        return False
    model = service.models.model(evidence.related)
    clauses = [getattr(model, link.column) == obj.id]
    clauses += [getattr(model, related.field(k).column) == v for k, v in evidence.where.items()]
    return bool(service.session.execute(select(exists().where(and_(*clauses)))).scalar())


def transition(service, record_id: Any, target: str, *, field: str | None = None, comment: str | None = None,
               data: dict[str, Any] | None = None, expected_version: Any = None) -> Any:
    """Move a record to ``target``; raises RecordNotFound / PermissionDenied / ValidationFailed /
    VersionConflict (nothing written) when refused. Returns the record."""
    entity = service.entity
    lang = service.actor.lang
    zh = not lang.startswith("en")
    registry = service.models.registry
    obj = service.get(record_id)
    service.require("update")
    service._check_version(obj, expected_version)
    pipeline = _pick(registry, entity.name, str(target), field, service.dictionaries)
    if pipeline is None:
        raise ValidationFailed({"to": ["此记录没有这个流程" if zh else "no pipeline of this record has that state"]})
    f = entity.field(pipeline.field_name)
    source = getattr(obj, f.column)
    label = lambda code: service.dictionaries.label(f.dictionary, code, lang)  # noqa: E731
    move = pipeline.move(source, str(target))
    if move is None:
        allowed = "、".join(label(t.target) for t in pipeline.moves_from(source)) or ("无" if zh else "none")
        raise ValidationFailed({f.name: [
            f"不能从「{label(source)}」转到「{label(target)}」（可转到：{allowed}）" if zh else
            f"Cannot move from '{label(source)}' to '{label(target)}' (possible: {allowed})"]})
    if not may_take(service.policy, entity.name, move):
        raise PermissionDenied("您的角色不能执行此流转" if zh else "Your role may not take this step")
    values = {k: v for k, v in (data or {}).items() if k not in (f.name, "version")}
    values.update(move.sets)
    # requirements, checked on the values the record will have after the move
    cleaned, errors = service._clean(values, obj=obj)
    service._raise(errors)
    missing = [name for name in move.requires
               if _empty(cleaned[name] if name in cleaned else service._current(obj, entity.field(name)))]
    problems: dict[str, list[str]] = {name: [message("required", lang)] for name in missing}
    names = [entity.field(n).label.get(lang) for n in missing]
    if move.comment_required and not (comment or "").strip():
        problems["comment"] = [message("required", lang)]
        names.append("说明" if zh else "a comment")
    if move.requires_one_of:
        if not any(_evidence_holds(service, obj, e) for e in move.requires_one_of):
            names.append(_evidence_text(registry, entity, move, service.dictionaries, lang))
            problems.setdefault("_", [])
    if problems:
        head = (f"进入「{label(target)}」前需要：" if zh else f"Before '{label(target)}' this is missing: ")
        problems["_"] = [head + ("、" if zh else "; ").join(names)]
        raise ValidationFailed(problems)
    service._fire("crm_before_transition", record=obj, field=f.name, source=source, target=str(target))
    service.transitioning = True
    try:
        obj = service.update(obj.id, {**values, f.name: str(target)}, expected_version=expected_version)
    finally:
        service.transitioning = False
    record(service.session, service.models, entity.name, obj.id, f.name, source, str(target), service.actor, comment)
    from crm_meta.services import audit

    audit.log_event(service.session, service.models.system, service.actor, "transition", entity=entity.name,
                    record_id=obj.id, field=f.name, old_value=source, new_value=str(target),
                    detail={"comment": comment} if comment else None)
    if move.notify_owner:
        texts = [f"{entity.label.get(lg)} #{obj.id}: {service.dictionaries.label(f.dictionary, source, lg)} → "
                 f"{service.dictionaries.label(f.dictionary, str(target), lg)}" for lg in ("zh", "en")]
        _notify_owner(service, obj, *texts)
    if move.follow_up is not None:
        from crm_meta.services import followups

        item = service.dictionaries.get(f.dictionary, str(target))
        followups.follow_up_task(service.session, service.models, entity.name, obj, move.follow_up, stage=str(target),
                                 stage_label=item.label if item else Label(str(target), str(target)))
    service._fire("crm_after_transition", record=obj, field=f.name, source=source, target=str(target))
    return obj


def _evidence_text(registry, entity, move, dictionaries, lang: str) -> str:
    zh = not lang.startswith("en")
    parts = []
    for e in move.requires_one_of:
        if e.field_name:
            parts.append(entity.field(e.field_name).label.get(lang))
        else:
            rel = registry.entity(e.related)
            conds = ", ".join(dictionaries.label(rel.field(k).dictionary, v, lang) if rel.field(k).dictionary else v
                              for k, v in e.where.items())
            parts.append(f"{rel.label.get(lang)}（{conds}）" if zh else f"a {rel.label.get(lang)} ({conds})")
    return ("以下之一：" if zh else "one of: ") + (" / ".join(parts))


def _notify_owner(service, obj: Any, zh: str, en: str) -> None:
    """Effect ``notify_owner``: a notice to the record's owner (once per version of the record)."""
    from crm_meta.services import notifications

    table = service.models.system.get("notification")
    owner_field = service.entity.owner_field
    if table is None or owner_field is None:
        return
    owner = getattr(obj, f"{owner_field}_id")
    if owner is None or owner == service.actor.user_id:
        return
    notifications.notify(service.session, table, [{
        "user_id": owner, "kind": notifications.TRANSITION, "entity": service.entity.name, "record_id": obj.id,
        "dedupe_key": f"{service.entity.name}:{obj.id}:v{obj.version}", "message": zh,
        "detail": {"zh": zh, "en": en}}])
