"""Built-in plugin: the follow-up cadence (跟进计划) and ticket SLAs (反馈工单), through the same hooks
as any plugin (disable with ``CRM_DISABLED_PLUGINS=crm_meta.process``).

| hook | what |
|---|---|
| ``crm_after_create`` / ``crm_after_update`` / ``crm_after_delete`` | customer: next follow-up due from the grade's cadence; follow_up: late flag, the customer's last/next follow-up; feedback: due times from the priority, responded/resolved stamps from the status |
| ``crm_cli_commands`` | ``crm remind [--date D]`` (first applies cadence changes: ``followups.apply_cadence_changes``), ``crm sla scan`` |
| ``crm_scheduled_jobs`` | ``follow_up_remind`` (hourly; notices once per owner and day), ``sla_scan`` (every 5 minutes) |
| ``crm_dashboard_widgets`` | notifications, follow-ups due, SLA breaches |
| ``crm_register_views`` | /crm/followups/, /crm/notifications/, /crm/sla/, REST /api/v1/notifications/ (crm_meta/web/process_views.py) |

The logic is in ``crm_meta.services.followups`` / ``sla`` / ``notifications`` (no Flask); the hooks
only route record events to it. Everything a hook writes is in the transaction of the change.
"""
from __future__ import annotations

import logging
import sys
from datetime import timedelta
from typing import Any

import click

from crm_meta.plugins import Job, Widget, hookimpl

log = logging.getLogger("crm_meta.process")

REMIND_EVERY = timedelta(hours=1)
SCAN_EVERY = timedelta(minutes=5)


def _models(record: Any):
    """The ModelSet of the app whose record this is, or None outside an app (record hooks get the
    session, not the app; scripts without an app can recompute with ``followups.backfill`` /
    ``sla.backfill``)."""
    from flask import current_app, has_app_context

    if not has_app_context():
        log.warning("crm_meta.process: %s changed outside an app; derived fields not updated",
                    type(record).__name__)
        return None
    models = current_app.extensions["crm"].models
    return models if isinstance(record, models.base) else None


# -- record hooks ----------------------------------------------------------------------------------

WATCHED = ("customer", "follow_up", "feedback")  # the entities whose changes move a clock


@hookimpl
def crm_after_create(entity, record, session):
    from crm_meta.services import followups, sla

    models = _models(record) if entity in WATCHED else None
    if models is None:
        return
    if entity == followups.CUSTOMER:
        followups.on_customer_created(session, models, record)
    elif entity == followups.FOLLOW_UP:
        followups.on_follow_up_created(session, models, record)
    elif entity == sla.FEEDBACK:
        sla.on_ticket_created(session, models, record)


@hookimpl
def crm_after_update(entity, record, changes, session):
    from crm_meta.services import followups, sla

    models = _models(record) if entity in WATCHED else None
    if models is None:
        return
    if entity == followups.CUSTOMER:
        followups.on_customer_updated(session, models, record, changes)
    elif entity == followups.FOLLOW_UP:
        followups.on_follow_up_updated(session, models, record, changes)
    elif entity == sla.FEEDBACK:
        sla.on_ticket_updated(session, models, record, changes)


@hookimpl
def crm_after_delete(entity, record, session):
    from crm_meta.services import followups

    models = _models(record) if entity == followups.FOLLOW_UP else None
    if models is not None:
        followups.on_follow_up_deleted(session, models, record)


# -- commands ------------------------------------------------------------------------------------

def _user_names(session: Any, ids) -> dict[int, str]:
    from flask_appbuilder.security.sqla.models import User
    from sqlalchemy import select

    ids = sorted(set(ids))
    if not ids:
        return {}
    return {u.id: f"{u.last_name or ''}{u.first_name or ''} ({u.username})" for u in session.execute(
        select(User).where(User.id.in_(ids))).scalars()}


@click.command("remind")
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="The day to remind for (YYYY-MM-DD; default: today).")
@click.option("--no-notify", is_flag=True, help="Only print; store no notifications.")
def remind_command(day, no_notify: bool) -> None:
    """Print the day's follow-up reminders per owner (due today, overdue) and store them as
    notifications (once per owner and day; run it from cron)."""
    from flask import current_app

    from crm_meta.services import followups

    b = current_app.extensions["crm"]
    if not followups.enabled(b.models):
        click.echo("customer has no next_follow_up_at field: nothing to remind", err=True)
        sys.exit(1)
    grades, moved = followups.apply_cadence_changes(b.db.session, b.models)
    result = followups.remind(b.db.session, b.models, day.date() if day else None, notify=not no_notify)
    b.db.session.commit()
    if grades:
        click.echo(f"跟进周期 Cadence of {', '.join(grades)} applied: {moved} due date(s) recomputed")
    names = _user_names(b.db.session, [o.owner_id for o in result.owners])
    click.echo(f"跟进提醒 Follow-up reminders {result.day.isoformat()}: {len(result.owners)} owner(s), "
               f"{result.due_today} due today, {result.overdue} overdue; "
               f"{result.created} new notification(s)")
    for o in result.owners:
        oldest = f" (oldest {o.oldest.isoformat()})" if o.overdue and o.oldest else ""
        click.echo(f"  {names.get(o.owner_id, f'user {o.owner_id}')}: {o.due_today} due today, "
                   f"{o.overdue} overdue{oldest}")


@click.group("sla")
def sla_group() -> None:
    """Ticket SLAs: escalate breached tickets (run `crm sla scan` or the job sla_scan)."""


@sla_group.command("scan")
def sla_scan_command() -> None:
    """Count the tickets that breached since the last scan and notify the dispatch department's
    managers where the priority escalates (one INSERT … SELECT; breached itself is read live)."""
    from flask import current_app

    from crm_meta.services import sla

    b = current_app.extensions["crm"]
    if not sla.enabled(b.models):
        click.echo("feedback has no SLA fields: nothing to scan", err=True)
        sys.exit(1)
    result = sla.scan(b.db.session, b.models)
    b.db.session.commit()
    click.echo(f"SLA scan {result.at:%Y-%m-%d %H:%M} UTC: {result.breached} ticket(s) newly breached, "
               f"{result.escalated} escalation notice(s)")


@hookimpl
def crm_cli_commands():
    return [remind_command, sla_group]


# -- jobs ----------------------------------------------------------------------------------------

def run_remind(build: Any) -> str:
    from crm_meta.services import followups

    if not followups.enabled(build.models):
        return "no cadence fields"
    grades, moved = followups.apply_cadence_changes(build.db.session, build.models)
    r = followups.remind(build.db.session, build.models)
    recomputed = f" (cadence changed: {moved} due date(s) recomputed)" if grades else ""
    return f"{r.day}: {len(r.owners)} owner(s), {r.due_today} due today, {r.overdue} overdue, {r.created} new notice(s){recomputed}"


def run_scan(build: Any) -> str:
    from crm_meta.services import sla

    if not sla.enabled(build.models):
        return "no SLA fields"
    r = sla.scan(build.db.session, build.models)
    return f"{r.breached} newly breached, {r.escalated} escalated"


@hookimpl
def crm_scheduled_jobs():
    return [Job("follow_up_remind", REMIND_EVERY, run_remind), Job("sla_scan", SCAN_EVERY, run_scan)]


# -- screens and dashboard -----------------------------------------------------------------------

def _render(name: str):
    def render(build, actor):
        from crm_meta.web import process_views

        return getattr(process_views, name)(build, actor)
    render.__name__ = name
    return render


@hookimpl
def crm_dashboard_widgets():
    return [Widget("notifications", {"zh": "通知", "en": "Notifications"}, _render("render_notifications_widget"),
                   order=2),
            Widget("follow_ups_due", {"zh": "跟进提醒", "en": "Follow-ups due"}, _render("render_followups_widget"),
                   entity="customer", order=3),
            Widget("sla_breaches", {"zh": "工单超时", "en": "SLA breaches"}, _render("render_sla_widget"),
                   entity="feedback", order=4)]


@hookimpl
def crm_register_views(appbuilder, build):
    from crm_meta.web.process_views import register_process_views

    register_process_views(appbuilder, build)
