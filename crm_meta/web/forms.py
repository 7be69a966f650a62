"""WTForms classes derived from an entity's fields: dropdowns for enums, date pickers, tag selects."""
from __future__ import annotations

from typing import Any

from flask import url_for
from flask_appbuilder.fieldwidgets import (
    BS3TextAreaFieldWidget,
    BS3TextFieldWidget,
    DatePickerWidget,
    Select2ManyWidget,
    Select2Widget,
)
from flask_appbuilder.forms import DynamicForm
from markupsafe import Markup, escape
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    DecimalField,
    HiddenField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.widgets import DateTimeLocalInput
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp

from crm_meta.metadata.fieldtypes import EMAIL_PATTERN, PHONE_PATTERN, URL_PATTERN
from crm_meta.metadata.model import Entity, Field, Label
from crm_meta.web import context
from crm_meta.web.i18n import current_lang, lazy, t


CHANGE_REASON = "change_reason"  # edit forms of entities with key fields ask why they change
# Date and time fields: the first format is what the form shows (<input type="datetime-local">,
# seconds kept); the others are what scripts and older forms post.
DATETIME_FORMATS = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]


class DateTimeLocalWidget(DateTimeLocalInput):
    """The browser's own date-and-time picker, styled as the other inputs.

    FAB's DateTimePickerWidget gets bootstrap-datepicker with a date-only format (ab.js): picking a
    day wrote no time, and focusing then leaving the field rewrote "2026-11-23 21:15:03" as
    "2026-11-24" — a value the form then refused, and a different day."""

    def __call__(self, field, **kwargs):
        kwargs.setdefault("class", "form-control")
        kwargs.setdefault("step", "1")  # seconds: the stored value shows and saves unchanged
        return super().__call__(field, **kwargs)


def enum_choices(field: Field, *, blank: bool = True):
    def choices() -> list[tuple[str, str]]:
        lang = current_lang()
        items = context.dictionaries().items(field.dictionary, group=field.group)
        return ([("", "")] if blank else []) + [(i.code, i.label.get(lang)) for i in items]
    return choices


def keep_current_choices(form, entity: Entity, obj: Any) -> None:
    """A record's own codes stay selectable on its edit form after their items were deactivated (marked
    so); without them the dropdown would show blank and a save would drop the value."""
    dicts, lang = context.dictionaries(), current_lang()
    for name in entity.form_fields:
        f = entity.field(name)
        if not f.dictionary or name not in form or not hasattr(form[name], "choices"):
            continue
        held = getattr(obj, name) if f.is_multi else getattr(obj, f.column)
        offered = {c[0] for c in form[name].choices or ()}
        extra = [(c, dicts.label(f.dictionary, c, lang) + t("（已停用）", " (inactive)"))
                 for c in ((held or []) if f.is_multi else [held] if held else []) if c not in offered]
        if extra:
            form[name].choices = list(form[name].choices or ()) + extra


def user_name(user) -> str:
    """Chinese names read family name first (王芳); others first name first."""
    if user is None:
        return ""
    first, last = user.first_name or "", user.last_name or ""
    if any("\u4e00" <= ch <= "\u9fff" for ch in first + last):
        return f"{last}{first}"
    return f"{first} {last}".strip() or user.username


def assignable_users(entity: str, user_model: Any):
    """A WHERE clause on users: those a record of ``entity`` may be given to (None: anyone)."""
    from sqlalchemy import or_, select

    policy = context.policy()
    departments = policy.assignable_departments(entity)
    if departments is None:
        return None
    mine = user_model.id == policy.user_id
    if not departments:
        return mine
    member = context.build().models.system["member"]
    return or_(mine, user_model.id.in_(select(member.c.user_id).where(member.c.department.in_(sorted(departments)))))


def user_choices(entity: str | None = None) -> list[tuple[str, str]]:
    """Active users a record of ``entity`` may be given to by this user (their own scope only)."""
    from flask_appbuilder.security.sqla.models import User
    from sqlalchemy import select

    stmt = select(User.id, User.first_name, User.last_name, User.username).where(User.active.is_(True))
    if entity is not None:
        clause = assignable_users(entity, User)
        if clause is not None:
            stmt = stmt.where(clause)
    rows = context.session().execute(stmt.order_by(User.username))
    return [("", "")] + [(str(r.id), f"{user_name(r)} ({r.username})") for r in rows]


class LookupWidget:
    """A Select2 box that asks the server for matching records as the user types."""

    def __call__(self, field: "LookupField", **kwargs: Any) -> Markup:
        url = url_for("LookupView.lookup", entity=field.target)
        option = ""
        if field.data not in (None, ""):
            model = context.build().models.model(field.target)
            obj = context.session().get(model, int(field.data)) if str(field.data).isdigit() else None
            if obj is not None:
                option = f'<option value="{obj.id}" selected>{escape(str(obj))}</option>'
        return Markup(
            f'<select class="crm-lookup form-control" id="{field.id}" name="{field.name}" '
            f'data-url="{escape(url)}" data-placeholder="{escape(t("输入以搜索", "Type to search"))}">'
            f'<option value=""></option>{option}</select>'
        )


class LookupField(StringField):
    widget = LookupWidget()

    def __init__(self, *args: Any, target: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.target = target


class Prefilled:
    """A required field the form starts filled (its declared default, e.g. the owner = me): marked
    required like the others (FAB's asterisk); left empty, the records service fills the default in."""

    field_flags = {"required": True}

    def __call__(self, form, field):
        return None


def _validators(f: Field) -> list:
    out: list = []
    if f.required and f.default is None:
        out.append(InputRequired() if f.storage == "integer" else DataRequired())
    elif f.required and not f.system:
        out.extend([Prefilled(), Optional()])
    else:
        out.append(Optional())
    if f.max_length and f.storage == "string":
        out.append(Length(max=f.max_length))
    if f.min_length:
        out.append(Length(min=f.min_length))
    if f.pattern:
        out.append(Regexp(f.pattern, message=lazy(f.message) if f.message else None))
    elif f.type in ("phone", "email", "url"):
        pattern = {"phone": PHONE_PATTERN, "email": EMAIL_PATTERN, "url": URL_PATTERN}[f.type]
        out.append(Regexp(pattern, message=lazy(_TYPE_MESSAGES[f.type])))
    if f.min is not None or f.max is not None:
        out.append(NumberRange(min=f.min, max=f.max))
    return out


_TYPE_MESSAGES = {
    "phone": Label("不是有效的电话号码", "Not a valid phone number"),
    "email": Label("不是有效的邮箱地址", "Not a valid email address"),
    "url": Label("不是有效的网址", "Not a valid http(s) URL"),
}


def _default(f: Field):
    """What a new record's form shows before the user types (the declared default)."""
    d = f.default
    if d is None:
        return None
    if d == "current_user":
        def me():
            from flask import current_app
            user = current_app.appbuilder.sm.current_user
            return str(user.id) if user is not None else ""
        return me
    if d in ("now", "today"):
        from datetime import date, datetime
        return (lambda: date.today()) if f.storage == "date" else (lambda: datetime.now().replace(microsecond=0))
    return d


def form_field(f: Field, entity: str | None = None):
    """The WTForms field for one dictionary field (``entity``: whose records the form edits)."""
    kw = {"label": lazy(f.label), "description": lazy(f.help), "validators": _validators(f),
          "default": _default(f)}
    if any(isinstance(v, Prefilled) for v in kw["validators"]):  # the asterisk, not the browser's check:
        kw["render_kw"] = {"required": False}  # an empty hidden Select2 box would block the form silently
    s = f.storage
    if f.type in ("enum",):
        return SelectField(choices=enum_choices(f), widget=Select2Widget(), validate_choice=False, **kw)
    if f.is_multi:
        return SelectMultipleField(choices=enum_choices(f, blank=False), widget=Select2ManyWidget(),
                                   validate_choice=False, **kw)
    if s == "fk_entity":
        return LookupField(target=f.entity, **kw)
    if s == "fk_user":
        return SelectField(choices=lambda: user_choices(entity), widget=Select2Widget(), validate_choice=False, **kw)
    if s == "text":
        return TextAreaField(widget=BS3TextAreaFieldWidget(), **kw)
    if s == "integer":
        return IntegerField(widget=BS3TextFieldWidget(), **kw)
    if s == "decimal":
        return DecimalField(widget=BS3TextFieldWidget(), places=None, **kw)
    if s == "boolean":
        kw["validators"] = [Optional()]
        return BooleanField(**kw)
    if s == "date":
        return DateField(widget=DatePickerWidget(), format="%Y-%m-%d", **kw)
    if s == "datetime":
        return DateTimeLocalField(widget=DateTimeLocalWidget(), format=DATETIME_FORMATS, **kw)
    return StringField(widget=BS3TextFieldWidget(), **kw)


def build_form(entity: Entity, *, edit: bool) -> type[DynamicForm]:
    """A form class with one field per editable field on the entity's form sections."""
    attrs: dict[str, Any] = {}
    for name in entity.form_fields:
        f = entity.field(name)
        if f.editable:
            attrs[name] = form_field(f, entity.name)
    if edit:
        attrs["version"] = HiddenField()
        if any(f.needs_approval for f in entity.fields):
            attrs[CHANGE_REASON] = StringField(
                lazy(Label("修改原因", "Reason for the change")), validators=[Optional(), Length(max=1000)],
                widget=BS3TextFieldWidget(), description=lazy(Label(
                    "修改关键字段（如联系人、电话）需经负责人或主管审批，请说明原因",
                    "Changes of key fields (contact, phone) need the owner's or a manager's approval; say why")))
    cls_name = "".join(p.capitalize() for p in entity.name.split("_")) + ("EditForm" if edit else "AddForm")
    return type(cls_name, (DynamicForm,), attrs)


def form_values(form: DynamicForm, entity: Entity) -> dict[str, Any]:
    """The submitted values keyed by field name, ready for the records service."""
    out: dict[str, Any] = {}
    for name in entity.form_fields:
        f = entity.field(name)
        if f.editable and name in form:
            out[name] = form[name].data
    return out


def record_values(obj: Any, entity: Entity) -> dict[str, Any]:
    """A record's current values as form data (ids as text for dropdowns)."""
    out: dict[str, Any] = {}
    for name in entity.form_fields:
        f = entity.field(name)
        if f.is_multi:
            out[name] = list(getattr(obj, name))
        elif f.is_fk:
            value = getattr(obj, f.column)
            out[name] = "" if value is None else str(value)
        else:
            out[name] = getattr(obj, f.column)
    out["version"] = obj.version
    return out
