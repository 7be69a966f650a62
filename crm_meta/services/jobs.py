"""Plugins' periodic jobs: which are due, and running one so that overlapping cron runs never double it.

The last run of each job is kept in ``crm_schema_state`` under ``job:<name>`` as JSON
(``started``, ``finished``, ``ok``, ``error``). A run first *claims* the job with a compare-and-set
UPDATE of that row (an INSERT the first time) and commits; a second runner started at the same
moment finds the row changed and skips the job. No Flask here: the caller passes the session.
"""
from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_meta.db.tables import utcnow

log = logging.getLogger("crm_meta.jobs")

PREFIX = "job:"


@dataclass(frozen=True)
class JobState:
    """The stored outcome of a job's last run (all None when it never ran)."""

    raw: str | None = None
    started: datetime | None = None
    finished: datetime | None = None
    ok: bool | None = None
    error: str | None = None


@dataclass(frozen=True)
class JobRun:
    """What ``run_job`` did: ran (ok or not, with the job's output or error) or skipped (why)."""

    name: str
    plugin: str
    ran: bool
    ok: bool = True
    output: str = ""
    skipped: str = ""


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def state_of(session: Session, table, name: str) -> JobState:
    raw = session.execute(select(table.c.value).where(table.c.key == PREFIX + name)).scalar()
    if raw is None:
        return JobState()
    try:
        data = json.loads(raw)
        return JobState(raw, _time(data.get("started")), _time(data.get("finished")), data.get("ok"),
                        data.get("error"))
    except (ValueError, AttributeError):
        return JobState(raw)


def next_run(job, state: JobState) -> datetime | None:
    """When the job is due next (None: now — it never ran)."""
    return state.started + job.interval if state.started else None


def is_due(job, state: JobState, now: datetime) -> bool:
    due = next_run(job, state)
    return due is None or now >= due


def _claim(session: Session, table, name: str, state: JobState, value: str) -> bool:
    key = PREFIX + name
    try:
        if state.raw is None:
            session.execute(table.insert().values(key=key, value=value))
        else:
            done = session.execute(table.update().where(table.c.key == key, table.c.value == state.raw)
                                   .values(value=value))
            if done.rowcount != 1:
                session.rollback()
                return False
        session.commit()
        return True
    except IntegrityError:  # another runner inserted the row first
        session.rollback()
        return False


def _call(run, build: Any) -> Any:
    try:
        takes_build = bool(inspect.signature(run).parameters)
    except (TypeError, ValueError):
        takes_build = True
    return run(build) if takes_build else run()


def run_job(session: Session, table, job, build: Any, *, force: bool = False, now: datetime | None = None) -> JobRun:
    """Run ``job`` once when due (or ``force``): claim, run, commit its work, record the outcome."""
    now = now or utcnow()
    state = state_of(session, table, job.name)
    if not force and not is_due(job, state, now):
        return JobRun(job.name, job.plugin, False, skipped=f"not due before {next_run(job, state):%Y-%m-%d %H:%M} UTC")
    started = {"started": now.isoformat(), "finished": None, "ok": None, "error": None}
    if not _claim(session, table, job.name, state, json.dumps(started)):
        return JobRun(job.name, job.plugin, False, skipped="another runner started it just now")
    try:
        output = _call(job.run, build)
        session.commit()
        run = JobRun(job.name, job.plugin, True, True, "" if output is None else str(output))
    except Exception as exc:  # noqa: BLE001 - reported with the plugin's name, the next job still runs
        session.rollback()
        log.exception("job %s of plugin %s failed", job.name, job.plugin)
        run = JobRun(job.name, job.plugin, True, False, f"{type(exc).__name__}: {exc}")
    finished = {**started, "finished": utcnow().isoformat(), "ok": run.ok, "error": None if run.ok else run.output}
    session.execute(table.update().where(table.c.key == PREFIX + job.name).values(value=json.dumps(finished)))
    session.commit()
    return run
