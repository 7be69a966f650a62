"""A changed ``cadence_days`` recomputes the due dates of that grade's customers: set-based (ONE
UPDATE per grade), the same dates as the row-by-row formula of the record hooks (server time zones
east and west of UTC, around midnight), only rows that change, versions untouched; the data-dictionary
admin service + ``recompute_cadence`` in one transaction; ``crm remind`` and its job apply changes
not applied yet, once; ``backfill`` set-based too — SQLite and PostgreSQL."""
from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import event, select

from crm_meta.services import clock, followups
from test_cadence import Crm

T0 = datetime(2026, 3, 2, 20, 30)  # UTC: 3-3 04:30 in UTC+8, 3-2 15:30 in UTC-5


@pytest.fixture(params=[8 * 60, -5 * 60, 0], ids=["utc+8", "utc-5", "utc"])
def offset(request, monkeypatch):
    """The server's time zone (local time minus UTC) as the clock sees it."""
    delta = timedelta(minutes=request.param)
    monkeypatch.setattr(clock, "local_offset", lambda: delta)
    return delta


@contextmanager
def statements(app):
    """The SQL statements run inside the block (on the app's engine)."""
    seen: list[str] = []
    engine = app.extensions["crm"].db.engine

    def listen(conn, cursor, statement, params, context, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def set_cadence(app, code: str, days) -> None:
    """An admin edits the grade's attrs in the dictionary table (no hook runs)."""
    with app.app_context():
        b = app.extensions["crm"]
        items = b.models.system["dict_item"]
        attrs = {} if days is None else {"cadence_days": days}
        b.db.session.execute(items.update().where(items.c.dictionary == "grade", items.c.code == code)
                             .values(attrs=attrs))
        b.db.session.commit()


def customers(app) -> dict[int, dict]:
    with app.app_context():
        b = app.extensions["crm"]
        t = b.models.model("customer").__table__
        return {r["id"]: dict(r) for r in b.db.session.execute(select(t)).mappings()}


def expected(app, rows: dict[int, dict]) -> dict[int, date | None]:
    """The row-by-row formula of the record hooks, for every customer."""
    with app.app_context():
        b = app.extensions["crm"]
        cadence = followups.cadences(b.db.session, b.models)
    return {i: followups.due_after(followups._day(r["last_follow_up_at"]) or followups._created_day(r["created_at"]),
                                   r["grade"], cadence) for i, r in rows.items()}


def world(app, crm: Crm) -> dict[str, int]:
    """Customers of every grade, entered at T0 and around the local midnight, some followed up."""
    ids = {}
    with clock.frozen(T0) as move:
        for grade in ("A", "B", "C"):
            ids[f"{grade}_new"] = crm.customer(f"{grade}新客户", grade)
            ids[f"{grade}_called"] = crm.customer(f"{grade}已跟进", grade)
            crm.follow_up(ids[f"{grade}_called"], datetime(2026, 3, 2, 23, 50))  # local wall-clock time
        move(datetime(2026, 3, 2, 15, 59))  # 23:59 in UTC+8
        ids["A_late_evening"] = crm.customer("A晚间", "A")
        move(datetime(2026, 3, 3, 4, 59))  # 23:59 in UTC-5
        ids["B_late_evening"] = crm.customer("B晚间", "B")
        ids["none"] = crm.customer("无等级", None)
    return ids


def test_recompute_is_one_update_per_grade_and_matches_the_record_hooks(make_app, offset):
    app = make_app()
    crm = Crm(app)
    ids = world(app, crm)
    before = customers(app)
    assert {i: r["next_follow_up_at"] for i, r in before.items()} == expected(app, before)  # the hooks' dates
    set_cadence(app, "A", 3)
    set_cadence(app, "B", 10.5)  # whole days, rounded up: 11
    set_cadence(app, "C", None)  # no cadence: no due date
    with app.app_context():
        b = app.extensions["crm"]
        with statements(app) as seen:
            changed = followups.recompute_cadence(b.db.session, b.models, "A")
        updates = [s for s in seen if s.lstrip().upper().startswith("UPDATE")]
        assert len([s for s in updates if "customer" in s.split("SET")[0]]) == 1, updates
        assert changed == 3
        assert followups.recompute_cadence(b.db.session, b.models, "A") == 0  # nothing left to change
        b.db.session.commit()
    mid = customers(app)
    assert mid[ids["B_new"]]["next_follow_up_at"] == before[ids["B_new"]]["next_follow_up_at"]  # B not yet
    with app.app_context():
        b = app.extensions["crm"]
        t = b.models.model("customer").__table__
        b.db.session.execute(t.update().where(t.c.id == ids["none"]).values(next_follow_up_at=date(2026, 3, 20),
                                                                            updated_at=t.c.updated_at))
        with statements(app) as seen:
            changed = followups.recompute_cadence(b.db.session, b.models)  # every grade of the dictionary
        b.db.session.commit()
    after = customers(app)
    assert changed == 5  # B: 3 customers, C: 2 customers (now without a date)
    want = expected(app, after)
    want[ids["none"]] = date(2026, 3, 20)  # customers without a grade are left alone
    assert {i: r["next_follow_up_at"] for i, r in after.items()} == want
    assert [after[ids[k]]["next_follow_up_at"] for k in ("C_new", "C_called")] == [None, None]
    for i, r in after.items():  # derived values: no version bump, no new updated_at
        assert (r["version"], r["updated_at"]) == (before[i]["version"], before[i]["updated_at"])
    updates = [s for s in seen if s.lstrip().upper().startswith("UPDATE") and "customer" in s.split("SET")[0]]
    with app.app_context():
        grades = followups.dictionary_attrs(app.extensions["crm"].db.session, app.extensions["crm"].models, "grade")
    assert len(updates) == len(grades)  # ONE UPDATE per grade, no row-by-row loop
    if offset == timedelta(hours=8):  # entered 3-2 15:59 UTC = 3-2 23:59 local; cadence 3 → 3-5
        assert after[ids["A_late_evening"]]["next_follow_up_at"] == date(2026, 3, 5)
        assert after[ids["A_new"]]["next_follow_up_at"] == date(2026, 3, 6)  # 3-3 04:30 local + 3


def test_admin_edit_and_recompute_commit_or_roll_back_together(make_app):
    from crm_meta.services import dictionary_admin
    from crm_meta.services.records import Actor

    app = make_app()
    crm = Crm(app)
    with clock.frozen(T0):
        a = crm.customer("甲", "A")  # 3-2 + 7
        crm.follow_up(a, datetime(2026, 3, 2, 10, 0))
    assert crm.row("customer", a)["next_follow_up_at"] == date(2026, 3, 9)
    with app.app_context():  # what the data-dictionary screen does, then the recompute, one transaction
        b = app.extensions["crm"]
        s = b.db.session
        dictionary_admin.edit_item(s, b.models.system, b.registry, Actor(crm.admin), "grade", "A",
                                   {"attrs": {"cadence_days": 2, "color": "#c0392b"}})
        assert followups.recompute_cadence(s, b.models, "A") == 1
        s.rollback()
    assert crm.row("customer", a)["next_follow_up_at"] == date(2026, 3, 9)  # rolled back together
    with app.app_context():
        b = app.extensions["crm"]
        s = b.db.session
        dictionary_admin.edit_item(s, b.models.system, b.registry, Actor(crm.admin), "grade", "A",
                                   {"attrs": {"cadence_days": 2, "color": "#c0392b"}})
        loaded = s.get(b.models.model("customer"), a)
        # the generic call after any dictionary change: nothing recorded yet, so A is compared with
        # its declared cadence (7) and recomputed
        assert followups.apply_cadence_changes(s, b.models) == (["A"], 1)
        assert loaded.next_follow_up_at == date(2026, 3, 4)  # loaded objects see the new date
        s.commit()
        dictionary_admin.edit_item(s, b.models.system, b.registry, Actor(crm.admin), "grade", "B",
                                   {"label": {"zh": "B级客户", "en": "B"}})
        assert followups.apply_cadence_changes(s, b.models) == ([], 0)  # no cadence changed: no UPDATE
        s.commit()
    assert crm.row("customer", a)["next_follow_up_at"] == date(2026, 3, 4)


def test_a_cadence_changed_before_anything_was_recorded_counts_at_the_first_remind(make_app):
    app = make_app()
    crm = Crm(app)
    with clock.frozen(datetime(2026, 3, 1, 8, 0)):
        a1 = crm.customer("甲一", "A")  # 3-8
        crm.customer("乙一", "B")
    set_cadence(app, "A", 2)  # e.g. edited before the upgrade that records applied cadences
    with clock.frozen(datetime(2026, 3, 3, 7, 0)):
        out = app.test_cli_runner().invoke(args=["crm", "remind"]).output
    assert "Cadence of A applied: 1 due date(s) recomputed" in out and "0 due today, 0 overdue" not in out, out
    assert crm.row("customer", a1)["next_follow_up_at"] == date(2026, 3, 3)


def test_remind_applies_cadence_changes_not_applied_yet_once(make_app):
    app = make_app()
    crm = Crm(app)
    with clock.frozen(datetime(2026, 3, 1, 8, 0)):
        a1 = crm.customer("甲一", "A")  # 3-8
        a2 = crm.customer("甲二", "A")
        crm.follow_up(a2, datetime(2026, 3, 3, 10, 0))  # 3-10
        b1 = crm.customer("乙一", "B")  # 3-15
    runner = app.test_cli_runner()
    with clock.frozen(datetime(2026, 3, 8, 7, 0)):
        first = runner.invoke(args=["crm", "remind"])  # the first run records the cadences as applied
        assert first.exit_code == 0, first.output
        assert "Cadence" not in first.output and "1 due today, 0 overdue" in first.output
        again = runner.invoke(args=["crm", "remind"])
        assert "Cadence" not in again.output  # nothing changed since: one small SELECT, no UPDATE
        set_cadence(app, "A", 3)  # an admin shortens A's cadence
        changed = runner.invoke(args=["crm", "remind"])
        assert "Cadence of A applied: 2 due date(s) recomputed" in changed.output, changed.output
        assert "0 due today, 2 overdue" in changed.output  # 3-4 and 3-6 are past
        assert [crm.row("customer", i)["next_follow_up_at"] for i in (a1, a2, b1)] == [
            date(2026, 3, 4), date(2026, 3, 6), date(2026, 3, 15)]
        assert "Cadence" not in runner.invoke(args=["crm", "remind"]).output
    with clock.frozen(datetime(2026, 3, 9, 7, 0)):
        set_cadence(app, "B", 7)  # B: 3-1 + 7 = 3-8
        out = runner.invoke(args=["crm", "jobs", "run", "follow_up_remind"]).output
        assert "(cadence changed: 1 due date(s) recomputed)" in out, out
        assert crm.row("customer", b1)["next_follow_up_at"] == date(2026, 3, 8)
        out = runner.invoke(args=["crm", "jobs", "run", "follow_up_remind"]).output
        assert "cadence changed" not in out


def test_backfill_is_set_based_and_gives_what_the_hooks_give(make_app, offset):
    app = make_app()
    crm = Crm(app)
    ids = world(app, crm)
    with clock.frozen(datetime(2026, 3, 4, 12, 0)):  # logged 24 h after (not late) and 24 h 1 min after (late)
        local = datetime(2026, 3, 4, 12, 0) + offset
        on_time = crm.follow_up(ids["A_new"], local - timedelta(hours=24))
        late = crm.follow_up(ids["B_new"], local - timedelta(hours=24, minutes=1))
    assert (crm.row("follow_up", on_time)["late"], crm.row("follow_up", late)["late"]) == (False, True)
    with app.app_context():
        b = app.extensions["crm"]
        f = b.models.model("follow_up").__table__
        good_follow = {r.id: r.late for r in b.db.session.execute(select(f.c.id, f.c.late))}
    good = customers(app)
    with app.app_context():  # as after a bulk load without the hooks
        b = app.extensions["crm"]
        t = b.models.model("customer").__table__
        b.db.session.execute(t.update().values(next_follow_up_at=None, last_follow_up_at=datetime(2020, 1, 1)))
        b.db.session.execute(f.update().values(late=None))
        b.db.session.commit()
        with statements(app) as seen:
            out = followups.backfill(b.db.session, b.models)
        b.db.session.commit()
        assert out == {"customers": len(good), "follow_ups": len(good_follow)}  # every row was off
        assert followups.backfill(b.db.session, b.models) == {"customers": 0, "follow_ups": 0}  # now nothing is
        assert {r.id: r.late for r in b.db.session.execute(select(f.c.id, f.c.late))} == good_follow
    updates = [s for s in seen if re.match(r"\s*UPDATE (customer|follow_up) ", s, re.I)]
    assert len(updates) == 1 + 3 + 1, updates  # follow-ups, then A, B, C and the rest: no loop per row
    restored = customers(app)
    for i, r in good.items():
        assert (restored[i]["last_follow_up_at"], restored[i]["next_follow_up_at"]) == (
            r["last_follow_up_at"], r["next_follow_up_at"]), i
        assert restored[i]["version"] == r["version"]
