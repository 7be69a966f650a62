"""Create, read, update and delete records of any entity: validation, numbering, versions, stamps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from crm_meta.db.tables import ModelSet, utcnow
from crm_meta.errors import (
    HookFailed,
    PermissionDenied,
    PluginError,
    RecordError,
    RecordNotFound,
    ValidationFailed,
    VersionConflict,
)
from crm_meta.metadata.model import DEPARTMENT_FIELD, Entity, Field
from crm_meta.services import approvals, audit, clock, numbering
from crm_meta.services.masking import looks_masked
from crm_meta.services.policy import SYSTEM, Policy, system_policy
from crm_meta.services.dictionaries import Dictionaries
from crm_meta.services.validation import Invalid, convert, message

COUNT_CAP = 10_000  # lists count at most this many rows and then say "10,000+"


@dataclass(frozen=True)
class Actor:
    """Who is acting: the user's id (None for the system), the language of messages and, for a web
    request, the username, client address and request id that the audit trail records."""

    user_id: int | None
    lang: str = "zh"
    username: str | None = None
    ip: str | None = None
    request_id: str | None = None


def title_of(entity: Entity, record: Any) -> str:
    """A record as people name it: its title field, or its number when that is empty."""
    column = entity.field(entity.title).column if entity.title else None
    value = getattr(record, column, None) if column else None
    return str(value) if value not in (None, "") else f"#{record.id}"


class RecordService:
    """All writes to one entity go through here, whatever the path (screen, REST, import).

    Plugins' record hooks (``crm_before_*`` / ``crm_after_*``) fire here, in the caller's transaction;
    ``plugins`` defaults to the app's (``models.plugins``). A refusal or a failing hook rolls the
    session back and raises a ``RecordError`` (``HookRefused`` / ``HookFailed``).

    ``policy`` is the access policy of the actor (default: the system's, which may do anything):
    every read is limited to the rows it may see (others are "not found"), every write checks its
    action, field rules, owner and references. Key-field changes by someone who may not approve
    them become change requests (``pending`` lists their ids after ``update``).
    """

    def __init__(self, session: Session, models: ModelSet, entity: str, actor: Actor,
                 dictionaries: Dictionaries | None = None, plugins: Any = None, policy: Policy | None = None):
        self.session = session
        self.models = models
        self.entity: Entity = models.registry.entity(entity)
        self.model = models.model(entity)
        self.actor = actor
        self._dicts = dictionaries
        self.plugins = plugins if plugins is not None else getattr(models, "plugins", None)
        self.policy = policy or system_policy(models.registry, models.system.get("member"))
        self.pending: list[int] = []  # change requests made by the last update
        self.approving = False  # True while an approved change request is applied
        self.transitioning = False  # True while a pipeline transition writes its field

    @property
    def dictionaries(self) -> Dictionaries:
        if self._dicts is None:
            self._dicts = Dictionaries.load(self.session, self.models.system["dict_item"])
        return self._dicts

    # reads -----------------------------------------------------------------------------------
    def get(self, record_id: Any) -> Any:
        try:
            record_id = int(record_id)
        except (TypeError, ValueError):
            raise RecordNotFound(self._msg_not_found()) from None
        stmt = self.policy.scope(self.entity.name, select(self.model).where(self.model.id == record_id), self.model)
        obj = self.session.execute(stmt).scalar_one_or_none()
        if obj is None:
            raise RecordNotFound(self._msg_not_found())
        return obj

    def require(self, action: str) -> None:
        """Refuse (403) unless the policy grants ``action`` on this entity."""
        if not self.policy.can(self.entity.name, action):
            raise PermissionDenied(self._t("您没有此操作的权限", "You are not allowed to do this"))

    def capped_count(self, stmt) -> tuple[int, bool]:
        """Count the rows of ``stmt`` up to COUNT_CAP; (count, capped)."""
        inner = stmt.with_only_columns(self.model.id).order_by(None).limit(COUNT_CAP + 1).subquery()
        n = self.session.execute(select(func.count()).select_from(inner)).scalar_one()
        return min(n, COUNT_CAP), n > COUNT_CAP

    # writes ----------------------------------------------------------------------------------
    def create(self, data: dict[str, Any]) -> Any:
        self.require("create")
        values, errors = self._clean(data, obj=None)
        self._raise(errors)
        self._fire("crm_before_create", data=values)
        self._check_hook_values(values)
        obj = self.model()
        self._assign(obj, values)
        now = utcnow()
        obj.created_at = obj.updated_at = now
        obj.created_by_id = obj.updated_by_id = self.actor.user_id
        self._stamp_department(obj)
        for f in self.entity.fields:
            if f.type == "autonumber":
                setattr(obj, f.name, numbering.next_number(
                    self.session, self.models.system["sequence"],
                    f"{self.entity.name}.{f.name}", f.format, clock.local_now()))
        self.session.add(obj)
        self._flush(obj)
        for p in self.models.registry.pipelines_of(self.entity.name):
            state = getattr(obj, p.field_name)
            if state is not None:
                from crm_meta.services import pipelines

                pipelines.record(self.session, self.models, self.entity.name, obj.id, p.field_name, None, state,
                                 self.actor)
        self._fire("crm_after_create", record=obj)
        audit.record_change(self.session, self.models.system, self.actor, "create", self.entity, obj.id,
                            {f.name: (None, self._current(obj, f)) for f in self.entity.user_fields})
        return obj

    def update(self, record_id: Any, data: dict[str, Any], expected_version: Any = None,
               reason: str | None = None) -> Any:
        self.pending = []
        obj = self.get(record_id)
        self.require("update")
        self._check_version(obj, expected_version)
        values, errors = self._clean(data, obj=obj)
        self._raise(errors)
        changes = self._changes(obj, values)
        key = {n: c for n, c in changes.items() if self.entity.field(n).needs_approval}
        if key and not self.approving and not self.may_approve(obj):
            for name in key:
                values.pop(name)
                changes.pop(name)
            self.pending.append(approvals.request(self.session, self.models, self.entity, obj, key,
                                                  self.actor, reason))
            if not changes:
                return obj
        self._fire("crm_before_update", record=obj, changes=changes)
        self._assign(obj, values)
        if self.entity.owner_field in changes:
            self._stamp_department(obj)
        obj.updated_at = utcnow()
        obj.updated_by_id = self.actor.user_id
        self._flush(obj)
        self._fire("crm_after_update", record=obj, changes=changes)
        audit.record_change(self.session, self.models.system, self.actor, "update", self.entity, obj.id, changes)
        return obj

    def delete(self, record_id: Any, expected_version: Any = None) -> None:
        obj = self.get(record_id)
        self.require("delete")
        self._check_version(obj, expected_version)
        self._fire("crm_before_delete", record=obj)
        deleted_id = obj.id
        self.session.delete(obj)
        try:
            self.session.flush()
        except IntegrityError:
            self.session.rollback()
            raise ValidationFailed({"_": [self._t(
                "其他记录仍引用此记录，不能删除", "other records still refer to this record; it cannot be deleted")]}) from None
        except StaleDataError:
            self.session.rollback()
            raise VersionConflict(self._msg_conflict()) from None
        self._fire("crm_after_delete", record=obj)
        audit.record_change(self.session, self.models.system, self.actor, "delete", self.entity, deleted_id, None)

    def may_approve(self, obj: Any) -> bool:
        """Key-field changes of ``obj`` take effect at once for its owner and for approvers."""
        if self.policy.can(self.entity.name, "approve"):
            return True
        owner = self.entity.owner_field
        return owner is not None and self.actor.user_id is not None and \
            getattr(obj, f"{owner}_id") == self.actor.user_id

    def _stamp_department(self, obj: Any) -> None:
        """Owned records carry their owner's department (what department scopes filter on)."""
        if self.entity.owned and self.entity.has_field(DEPARTMENT_FIELD):
            owner_id = getattr(obj, f"{self.entity.owner_field}_id")
            setattr(obj, DEPARTMENT_FIELD, self.policy.department_of(self.session, owner_id))

    # plugin hooks ----------------------------------------------------------------------------
    def _fire(self, hook: str, **kwargs: Any) -> None:
        """Run a record hook; on a refusal or failure roll back (nothing half-written) and raise."""
        if self.plugins is None:
            return
        try:
            self.plugins.fire(hook, entity=self.entity.name, actor=self.actor, session=self.session, **kwargs)
        except RecordError:
            self.session.rollback()
            raise
        except PluginError as exc:
            self.session.rollback()
            detail = exc.problem.split(" raised ", 1)[-1]
            raise HookFailed(self._t(f"插件 {exc.plugin} 出错，未保存任何更改（{hook}：{detail}）",
                                     f"Plugin {exc.plugin} failed, nothing was saved ({hook}: {detail})"),
                             exc.plugin, hook) from exc

    def _changes(self, obj: Any, values: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """{field: (old, new)} for the values that differ from the stored ones."""
        changes = {}
        for name, new in values.items():
            old = self._current(obj, self.entity.field(name))
            if old != new:
                changes[name] = (old, new)
        return changes

    def _check_hook_values(self, values: dict[str, Any]) -> None:
        """A before-hook may add values; only to fields that exist and may be written."""
        bad = [n for n in values if not self.entity.has_field(n) or not self.entity.field(n).editable]
        if bad:
            self.session.rollback()
            raise ValidationFailed({n: [message("unknown" if not self.entity.has_field(n) else "readonly",
                                                self.actor.lang)] for n in bad})

    # helpers ---------------------------------------------------------------------------------
    def _t(self, zh: str, en: str) -> str:
        return en if self.actor.lang.startswith("en") else zh

    def _msg_conflict(self) -> str:
        return self._t("保存失败：此记录在您打开后已被他人修改，请刷新后重试。",
                       "Not saved: someone else changed this record after you opened it. Reload it and try again.")

    def _msg_not_found(self) -> str:
        return self._t("记录不存在", "Record not found")

    def _check_version(self, obj: Any, expected: Any) -> None:
        if expected is None or expected == "":
            return
        try:
            expected = int(expected)
        except (TypeError, ValueError):
            raise ValidationFailed({"version": [self._t("版本号必须是整数", "must be an integer")]}) from None
        if expected != obj.version:
            raise VersionConflict(self._msg_conflict())

    def _default(self, f: Field) -> Any:
        d = f.default
        if d == "current_user":
            return self.actor.user_id
        if d in ("now", "today"):
            return clock.today() if f.base == "date" else clock.local_now().replace(microsecond=0)
        return list(d) if isinstance(d, list) else d

    def _clean(self, data: dict[str, Any], obj: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
        lang = self.actor.lang
        errors: dict[str, list[str]] = {}
        values: dict[str, Any] = {}
        access = self.policy.access(self.entity.name)
        for name, raw in data.items():
            if not self.entity.has_field(name) or name in access.hidden:
                errors.setdefault(name, []).append(message("unknown", lang))
                continue
            f = self.entity.field(name)
            current = self._current(obj, f) if obj is not None else None
            kind = access.masked.get(name)
            if kind and obj is not None and looks_masked(kind, raw, current):
                continue  # a masked value sent back unchanged: keep the real one
            if not f.editable or name in access.readonly:
                try:
                    same = obj is not None and convert(f, raw, self.dictionaries, old=current) == current
                except Invalid:
                    same = False
                if not same and raw is not None:
                    errors.setdefault(name, []).append(message("readonly", lang))
                continue
            try:
                values[name] = convert(f, raw, self.dictionaries, old=current)
            except Invalid as exc:
                errors.setdefault(name, []).append(message(exc.key, lang, **exc.kw))
        for f in self.entity.user_fields:
            if not f.editable or f.name in access.hidden or f.name in access.readonly:
                continue
            if obj is None and f.default is not None and (
                    f.name not in values or (f.required and values[f.name] in (None, []))):
                values[f.name] = self._default(f)
            if f.required:
                value = values[f.name] if f.name in values else (self._current(obj, f) if obj is not None else None)
                if value in (None, "", []) and f.name not in errors:
                    errors.setdefault(f.name, []).append(message("required", lang))
        self._guard_pipelines(values, obj, errors)
        for name, value in values.items():
            f = self.entity.field(name)
            if value in (None, []) or name in errors:
                continue
            unchanged = obj is not None and value == self._current(obj, f)
            if f.storage == "fk_entity" and not unchanged and not self._visible(f.entity, value):
                errors.setdefault(name, []).append(message("missing", lang))
            elif f.storage == "fk_user" and not unchanged and not self._user_exists(value):
                errors.setdefault(name, []).append(message("missing", lang))
            elif name in (self.entity.owner_field, self.entity.assignee_field) and not unchanged and \
                    not self.policy.may_assign(self.session, self.entity.name, value):
                errors.setdefault(name, []).append(self._t("不能把记录交给此用户（超出您的权限范围）",
                                                           "You cannot give the record to this user "
                                                           "(outside your scope)"))
            elif f.unique and self._taken(f, value, obj):
                errors.setdefault(name, []).append(message("unique", lang))
        return values, errors

    def _guard_pipelines(self, values: dict[str, Any], obj: Any, errors: dict[str, list[str]]) -> None:
        """A pipeline field starts in its initial state and then moves only by a transition (the
        system — demo data, jobs — may set any state)."""
        if self.transitioning or self.policy.principal is SYSTEM:
            return
        for p in self.models.registry.pipelines_of(self.entity.name):
            name = p.field_name
            if name not in values or name in errors:
                continue
            label = self.entity.field(name).label.get(self.actor.lang)
            if obj is None and values[name] not in (None, p.initial):
                errors.setdefault(name, []).append(self._t(
                    f"新记录的{label}从「{p.initial}」开始，之后用流转按钮改变",
                    f"A new record's {label} starts at '{p.initial}'; change it with a transition"))
            elif obj is not None and values[name] != self._current(obj, self.entity.field(name)):
                errors.setdefault(name, []).append(self._t(
                    f"{label}只能通过流转改变（记录页面上的按钮，或 POST …/transition）",
                    f"{label} changes only through a transition (the buttons on the record page, or POST …/transition)"))

    def _visible(self, entity: str, record_id: Any) -> bool:
        """A reference must point at a record the user may see (not merely one that exists)."""
        model = self.models.model(entity)
        stmt = self.policy.scope(entity, select(model.id).where(model.id == record_id), model)
        return self.session.execute(stmt).first() is not None

    def _user_exists(self, user_id: int) -> bool:
        user_model = self.model.__mapper__.relationships["created_by"].mapper.class_
        return self.session.execute(select(user_model.id).where(user_model.id == user_id)).first() is not None

    def _taken(self, f: Field, value: Any, obj: Any) -> bool:
        col = getattr(self.model, f.column)
        stmt = select(self.model.id).where(col == value)
        if obj is not None:
            stmt = stmt.where(self.model.id != obj.id)
        return self.session.execute(stmt.limit(1)).first() is not None

    @staticmethod
    def _current(obj: Any, f: Field) -> Any:
        if f.is_multi:
            return list(getattr(obj, f.name))
        return getattr(obj, f.column)

    def _assign(self, obj: Any, values: dict[str, Any]) -> None:
        for name, value in values.items():
            f = self.entity.field(name)
            if f.is_multi:
                setattr(obj, name, list(value or []))
            else:
                setattr(obj, f.column, value)

    def _raise(self, errors: dict[str, list[str]]) -> None:
        if errors:
            raise ValidationFailed(errors)

    def _flush(self, obj: Any) -> None:
        try:
            self.session.flush()
        except StaleDataError:
            self.session.rollback()
            raise VersionConflict(self._msg_conflict()) from None
        except IntegrityError as exc:
            self.session.rollback()
            raise ValidationFailed({"_": [self._t("数据冲突，未保存：", "Conflicting data, nothing saved: ")
                                          + str(exc.orig).splitlines()[0][:200]]}) from None
