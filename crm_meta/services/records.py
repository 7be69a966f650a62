"""Create, read, update and delete records of any entity: validation, numbering, versions, stamps."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from crm_meta.db.tables import ModelSet, utcnow
from crm_meta.errors import HookFailed, PluginError, RecordError, RecordNotFound, ValidationFailed, VersionConflict
from crm_meta.metadata.model import Entity, Field
from crm_meta.services import numbering
from crm_meta.services.dictionaries import Dictionaries
from crm_meta.services.validation import Invalid, convert, message

COUNT_CAP = 10_000  # lists count at most this many rows and then say "10,000+"


@dataclass(frozen=True)
class Actor:
    """Who is acting: the user's id (None for the system) and the language of messages."""

    user_id: int | None
    lang: str = "zh"


class RecordService:
    """All writes to one entity go through here, whatever the path (screen, REST, import).

    Plugins' record hooks (``crm_before_*`` / ``crm_after_*``) fire here, in the caller's transaction;
    ``plugins`` defaults to the app's (``models.plugins``). A refusal or a failing hook rolls the
    session back and raises a ``RecordError`` (``HookRefused`` / ``HookFailed``).
    """

    def __init__(self, session: Session, models: ModelSet, entity: str, actor: Actor,
                 dictionaries: Dictionaries | None = None, plugins: Any = None):
        self.session = session
        self.models = models
        self.entity: Entity = models.registry.entity(entity)
        self.model = models.model(entity)
        self.actor = actor
        self._dicts = dictionaries
        self.plugins = plugins if plugins is not None else getattr(models, "plugins", None)

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
        obj = self.session.get(self.model, record_id)
        if obj is None:
            raise RecordNotFound(self._msg_not_found())
        return obj

    def capped_count(self, stmt) -> tuple[int, bool]:
        """Count the rows of ``stmt`` up to COUNT_CAP; (count, capped)."""
        inner = stmt.with_only_columns(self.model.id).order_by(None).limit(COUNT_CAP + 1).subquery()
        n = self.session.execute(select(func.count()).select_from(inner)).scalar_one()
        return min(n, COUNT_CAP), n > COUNT_CAP

    # writes ----------------------------------------------------------------------------------
    def create(self, data: dict[str, Any]) -> Any:
        values, errors = self._clean(data, obj=None)
        self._raise(errors)
        self._fire("crm_before_create", data=values)
        self._check_hook_values(values)
        obj = self.model()
        self._assign(obj, values)
        now = utcnow()
        obj.created_at = obj.updated_at = now
        obj.created_by_id = obj.updated_by_id = self.actor.user_id
        for f in self.entity.fields:
            if f.type == "autonumber":
                setattr(obj, f.name, numbering.next_number(
                    self.session, self.models.system["sequence"],
                    f"{self.entity.name}.{f.name}", f.format, datetime.now()))
        self.session.add(obj)
        self._flush(obj)
        self._fire("crm_after_create", record=obj)
        return obj

    def update(self, record_id: Any, data: dict[str, Any], expected_version: Any = None) -> Any:
        obj = self.get(record_id)
        self._check_version(obj, expected_version)
        values, errors = self._clean(data, obj=obj)
        self._raise(errors)
        changes = self._changes(obj, values)
        self._fire("crm_before_update", record=obj, changes=changes)
        self._assign(obj, values)
        obj.updated_at = utcnow()
        obj.updated_by_id = self.actor.user_id
        self._flush(obj)
        self._fire("crm_after_update", record=obj, changes=changes)
        return obj

    def delete(self, record_id: Any, expected_version: Any = None) -> None:
        obj = self.get(record_id)
        self._check_version(obj, expected_version)
        self._fire("crm_before_delete", record=obj)
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
            return date.today() if f.type == "date" else datetime.now().replace(microsecond=0)
        return list(d) if isinstance(d, list) else d

    def _clean(self, data: dict[str, Any], obj: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
        lang = self.actor.lang
        errors: dict[str, list[str]] = {}
        values: dict[str, Any] = {}
        for name, raw in data.items():
            if not self.entity.has_field(name):
                errors.setdefault(name, []).append(message("unknown", lang))
                continue
            f = self.entity.field(name)
            current = self._current(obj, f) if obj is not None else None
            if not f.editable:
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
            if not f.editable:
                continue
            if obj is None and f.default is not None and (
                    f.name not in values or (f.required and values[f.name] in (None, []))):
                values[f.name] = self._default(f)
            if f.required:
                value = values[f.name] if f.name in values else (self._current(obj, f) if obj is not None else None)
                if value in (None, "", []) and f.name not in errors:
                    errors.setdefault(f.name, []).append(message("required", lang))
        for name, value in values.items():
            f = self.entity.field(name)
            if value in (None, []) or name in errors:
                continue
            if f.storage == "fk_entity" and self.session.get(self.models.model(f.entity), value) is None:
                errors.setdefault(name, []).append(message("missing", lang))
            elif f.storage == "fk_user" and not self._user_exists(value):
                errors.setdefault(name, []).append(message("missing", lang))
            elif f.unique and self._taken(f, value, obj):
                errors.setdefault(name, []).append(message("unique", lang))
        return values, errors

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
