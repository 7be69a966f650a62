"""The hooks of crm_birthday. Every function marked ``@hookimpl`` is found by its name."""
from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from markupsafe import escape
from sqlalchemy import select

from crm_meta import hookimpl
from crm_meta.errors import HookRefused
from crm_meta.metadata.fieldtypes import CustomType
from crm_meta.plugins import Widget

log = logging.getLogger("crm_birthday")

HERE = Path(__file__).resolve().parent
REMIND_DAYS = 7  # the daily job reminds about birthdays this many days ahead


# -- the logic (plain functions, easy to test) ----------------------------------------------------

def next_birthday(birthday: date, today: date) -> date:
    """The next date (today or later) the birthday falls on; 29 February is kept on 28 February."""
    for year in (today.year, today.year + 1):
        try:
            day = birthday.replace(year=year)
        except ValueError:  # 29 February in a common year
            day = date(year, 2, 28)
        if day >= today:
            return day
    raise AssertionError("unreachable")


def upcoming(session, models, today: date, days: int) -> list[tuple[Any, date]]:
    """Contacts with the reminder on whose birthday is within ``days`` days, soonest first."""
    contact = models.model("contact")
    rows = session.execute(select(contact).where(contact.birthday_reminder.is_(True),
                                                 contact.birthday.is_not(None))).scalars()
    found = [(c, next_birthday(c.birthday, today)) for c in rows]
    return sorted(((c, d) for c, d in found if (d - today).days <= days), key=lambda x: (x[1], x[0].id))


def normalize_wechat_id(text: str) -> str:
    """WeChat IDs are not case-sensitive: keep one spelling ("WX Zhang-San" → "wxzhang-san")."""
    return text.replace(" ", "").lower()


def not_a_generated_wechat_id(value: str) -> dict | None:
    """The ``wxid_…`` IDs WeChat generates cannot be searched for; ask for the chosen one."""
    if value.startswith("wxid_"):
        return {"zh": "请填写自己设置的微信号，而不是系统生成的 wxid_ 号",
                "en": "give the WeChat ID the contact chose, not the generated wxid_ one"}
    return None


#: A field type of its own: ``type: wechat_id`` is stored and edited as a string of at most 20 characters.
WECHAT_ID = CustomType(
    "wechat_id", base="string", label={"zh": "微信号", "en": "WeChat ID"}, length=20,
    pattern=r"^[a-zA-Z][-_a-zA-Z0-9]{5,19}$",
    message={"zh": "微信号为 6–20 位字母、数字、- 或 _，以字母开头",
             "en": "a WeChat ID has 6-20 letters, digits, - or _ and starts with a letter"},
    normalize=normalize_wechat_id, check=not_a_generated_wechat_id)


def _refuse_reminder_without_birthday(reminder: Any, birthday: Any, lang: str) -> None:
    if reminder and birthday is None:
        raise HookRefused("开启生日提醒前请先填写生日" if lang == "zh"
                          else "Fill in the birthday before turning the birthday reminder on")


# -- hooks ----------------------------------------------------------------------------------------

@hookimpl
def crm_schema_paths():
    return [HERE / "schemas"]


@hookimpl
def crm_field_types():
    return [WECHAT_ID]  # used by contact.wechat in schemas/contact_birthday.yaml


@hookimpl
def crm_before_create(entity, data, actor):
    if entity == "contact":
        _refuse_reminder_without_birthday(data.get("birthday_reminder"), data.get("birthday"), actor.lang)


@hookimpl
def crm_before_update(entity, record, changes, actor):
    if entity == "contact" and {"birthday_reminder", "birthday"} & set(changes):
        reminder = changes.get("birthday_reminder", (None, record.birthday_reminder))[1]
        birthday = changes.get("birthday", (None, record.birthday))[1]
        _refuse_reminder_without_birthday(reminder, birthday, actor.lang)


@hookimpl
def crm_after_create(entity, record, actor):
    if entity == "contact" and record.birthday is not None:
        days = (next_birthday(record.birthday, date.today()) - date.today()).days
        log.info("contact %s (#%s) added by user %s: next birthday in %d day(s)",
                 record.name, record.id, actor.user_id, days)


def render_upcoming(build, actor) -> str:
    today = date.today()
    rows = upcoming(build.db.session, build.models, today, 30)
    if not rows:
        return f"<p>{escape('未来 30 天没有生日' if actor.lang == 'zh' else 'No birthdays in the next 30 days')}</p>"
    items = "".join(f"<li>{escape(d.isoformat())} — {escape(c.name)}</li>" for c, d in rows[:20])
    return f'<ul class="crm-birthdays">{items}</ul>'


@hookimpl
def crm_dashboard_widgets():
    return [Widget("upcoming_birthdays", {"zh": "近期生日", "en": "Upcoming birthdays"}, render_upcoming,
                   entity="contact", order=50)]


@click.command("birthdays")
@click.option("--days", default=30, show_default=True, help="How many days ahead.")
@with_appcontext
def birthdays_command(days: int) -> None:
    """List the contacts whose birthday comes within DAYS days (reminder on)."""
    build = current_app.extensions["crm"]
    rows = upcoming(build.db.session, build.models, date.today(), days)
    for contact, day in rows:
        click.echo(f"{day.isoformat()}  {contact.name}  (contact #{contact.id})")
    click.echo(f"{len(rows)} birthday(s) in the next {days} day(s)")


@hookimpl
def crm_cli_commands():
    return [birthdays_command]


def send_reminders(build) -> str:
    """The daily job: one reminder per contact whose birthday is within REMIND_DAYS days (logged here;
    a real plugin would e-mail the owner)."""
    rows = upcoming(build.db.session, build.models, date.today(), REMIND_DAYS)
    for contact, day in rows:
        owner = getattr(contact.owner, "username", None)
        log.info("birthday reminder to %s: %s on %s", owner, contact.name, day.isoformat())
    return f"{len(rows)} reminder(s)"


@hookimpl
def crm_scheduled_jobs():
    return [("birthday_reminders", timedelta(days=1), send_reminders)]
