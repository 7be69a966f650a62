"""Auto-numbers such as C20240501001: a date part plus a per-period sequence, unique under concurrency."""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

_TOKEN = re.compile(r"\{(YYYYMMDD|YYYYMM|YYYY|YY|MM|DD|seq:(\d{1,2}))\}")
_DATE = {"YYYYMMDD": "%Y%m%d", "YYYYMM": "%Y%m", "YYYY": "%Y", "YY": "%y", "MM": "%m", "DD": "%d"}


def split_format(fmt: str, when: datetime) -> tuple[str, str, int]:
    """(text before the sequence, text after it, minimum digits) for the moment ``when``."""
    before, after, width, seen = [], [], 0, False
    pos = 0
    for m in _TOKEN.finditer(fmt):
        (after if seen else before).append(fmt[pos:m.start()])
        if m.group(2):
            width, seen = int(m.group(2)), True
        else:
            (after if seen else before).append(when.strftime(_DATE[m.group(1)]))
        pos = m.end()
    (after if seen else before).append(fmt[pos:])
    return "".join(before), "".join(after), width


def render(fmt: str, when: datetime, value: int) -> str:
    """The number for sequence ``value``; it widens past ``N`` digits instead of failing."""
    head, tail, width = split_format(fmt, when)
    return f"{head}{value:0{width}d}{tail}"


def next_value(session: Session, sequence: Table, name: str, period: str) -> int:
    """Atomically take the next value of ``name`` in ``period``.

    One INSERT … ON CONFLICT DO UPDATE … RETURNING. On PostgreSQL it runs in a transaction of its
    own, so the row lock is held for microseconds, not for the caller's whole write; a number taken
    by a write that later fails is not reused (gaps are allowed, duplicates never). SQLite has one
    writer at a time anyway, so there it runs on the caller's own connection (a second connection
    would wait on the caller's own write lock).
    """
    engine = session.get_bind()
    dialect = engine.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(sequence).values(name=name, period=period, value=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[sequence.c.name, sequence.c.period],
        set_={"value": sequence.c.value + 1},
    ).returning(sequence.c.value)
    if dialect == "sqlite" or not isinstance(engine, Engine):
        return session.connection().execute(stmt).scalar_one()
    with engine.begin() as conn:
        return conn.execute(stmt).scalar_one()


def next_number(session: Session, sequence: Table, name: str, fmt: str, when: datetime) -> str:
    head, tail, _ = split_format(fmt, when)
    return render(fmt, when, next_value(session, sequence, name, head + "|" + tail))


def current_value(engine: Engine, sequence: Table, name: str, period: str) -> int:
    with engine.connect() as conn:
        value = conn.execute(select(sequence.c.value).where(
            sequence.c.name == name, sequence.c.period == period)).scalar()
    return value or 0
