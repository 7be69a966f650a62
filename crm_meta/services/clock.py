"""The one clock of the follow-up cadence and the ticket SLAs: naive UTC, replaceable in tests.

Everything in ``crm_meta.services.followups``, ``crm_meta.services.sla`` and
``crm_meta.services.notifications`` asks ``now()`` (reminders of the day, breach scans, response and
resolution stamps, "time left", notification times). Tests freeze it::

    from crm_meta.services import clock

    with clock.frozen(datetime(2026, 3, 2, 9, 0)):
        ...  # every call of clock.now() answers 2026-03-02 09:00 (UTC)

Record stamps (``created_at``) are written by ``RecordService`` with ``crm_meta.db.tables.utcnow``;
``frozen(..., stamps=True)`` (the default) pins that one too, so a record created in a frozen test
has the frozen ``created_at``.

Business times typed by people (``follow_up.followed_at``, ``feedback.feedback_at``) are local
wall-clock times (as in the forms and the demo data); ``local_now()`` and ``today()`` are the
clock's time in the server's local time zone, for comparing with them.
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterator

_source: Callable[[], datetime] | None = None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def now() -> datetime:
    """The current time, naive UTC (the frozen time in tests)."""
    return (_source or _utcnow)()


def local_offset() -> timedelta:
    """Local time minus UTC, in whole minutes (0 on a server running in UTC)."""
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    return timedelta(minutes=round(offset.total_seconds() / 60))


def local_now() -> datetime:
    """``now()`` as a local wall-clock time (what people type into datetime fields)."""
    return now() + local_offset()


def today() -> date:
    """The local date of ``now()``: the day reminders are for."""
    return local_now().date()


def to_local(value: datetime | None) -> datetime | None:
    """A stored UTC stamp as local wall-clock time."""
    return None if value is None else value + local_offset()


def set_clock(source: Callable[[], datetime] | None) -> None:
    """Use ``source()`` as the clock (None: the real one)."""
    global _source
    _source = source


@contextmanager
def frozen(at: datetime, *, stamps: bool = True) -> Iterator[Callable[[datetime], None]]:
    """Freeze the clock at ``at`` (naive UTC); yields ``move(to)`` to set it to another time.

    With ``stamps`` the records service's ``created_at``/``updated_at`` stamps use it too.
    """
    import crm_meta.services.records as records

    current = [at]

    def source() -> datetime:
        return current[0]

    def move(to: datetime) -> None:
        current[0] = to

    previous = _source
    saved = records.utcnow
    set_clock(source)
    if stamps:
        records.utcnow = source
    try:
        yield move
    finally:
        set_clock(previous)
        records.utcnow = saved
