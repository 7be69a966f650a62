"""Follow-up cadence (跟进计划): next due from the grade's cadence_days, recomputed on follow-ups and
grade changes; the late flag; `crm remind` per owner for a frozen date, notifications once per day;
"My follow-ups" and the notification list scoped to the user — SQLite and PostgreSQL."""
from __future__ import annotations

import re
import shutil
from datetime import date, datetime
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from crm_meta.services import clock
from support import csrf_token, login
from test_access_matrix import World

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 9, 0)  # a Monday, 09:00 UTC (the test server runs in UTC)
CUSTOMER = {"customer_type": "prospect", "industry": "finance", "contact_name": "王五",
            "contact_phone": "13700000000"}


class Crm:
    """Records written through the records service as a given user (no request, no assignment rules)."""

    def __init__(self, app):
        self.app = app
        with app.app_context():
            self.admin = app.appbuilder.sm.find_user(username="admin").id

    def _svc(self, entity, user):
        from crm_meta.services.records import Actor, RecordService

        b = self.app.extensions["crm"]
        return RecordService(b.db.session, b.models, entity, Actor(user or self.admin))

    def create(self, entity, data, user=None):
        with self.app.app_context():
            obj = self._svc(entity, user).create(data)
            self.app.extensions["crm"].db.session.commit()
            return obj.id

    def update(self, entity, rid, data, user=None):
        with self.app.app_context():
            self._svc(entity, user).update(rid, data)
            self.app.extensions["crm"].db.session.commit()

    def delete(self, entity, rid):
        with self.app.app_context():
            self._svc(entity, None).delete(rid)
            self.app.extensions["crm"].db.session.commit()

    def row(self, entity, rid):
        with self.app.app_context():
            b = self.app.extensions["crm"]
            t = b.models.model(entity).__table__
            return b.db.session.execute(select(t).where(t.c.id == rid)).mappings().one()

    def customer(self, name, grade, owner=None):
        return self.create("customer", {**CUSTOMER, "name": name, "grade": grade, "owner": owner or self.admin},
                           owner)

    def follow_up(self, customer, at, owner=None):
        return self.create("follow_up", {"customer": customer, "followed_at": at, "method": "phone",
                                         "content": "电话沟通", "owner": owner or self.admin}, owner)

    def user(self, name, role, department, manager=False):
        from crm_meta.services.members import set_member

        with self.app.app_context():
            sm = self.app.appbuilder.sm
            u = sm.add_user(name, name, "T", f"{name}@t.invalid", sm.find_role(role), PASSWORD)
            b = self.app.extensions["crm"]
            set_member(b.db.session, b.registry, b.models.system["member"], u.id, department, manager)
            b.db.session.commit()
            return u.id


PASSWORD = "Cadence-pw-2026!"


def test_next_due_follows_the_grade_cadence_and_is_recomputed(make_app):
    app = make_app()
    crm = Crm(app)
    with clock.frozen(T0) as move:
        a, b, c, none = (crm.customer(n, g) for n, g in (("甲", "A"), ("乙", "B"), ("丙", "C"), ("丁", None)))
        # new customers: created date + cadence (A 7, B 14, C 30 days); no grade, no due date
        assert [crm.row("customer", i)["next_follow_up_at"] for i in (a, b, c, none)] == [
            date(2026, 3, 9), date(2026, 3, 16), date(2026, 4, 1), None]
        assert crm.row("customer", a)["last_follow_up_at"] is None

        move(datetime(2026, 3, 5, 12, 0))  # logged two hours after the call: not late
        f1 = crm.follow_up(a, datetime(2026, 3, 5, 10, 0))
        row = crm.row("customer", a)
        assert row["last_follow_up_at"] == datetime(2026, 3, 5, 10, 0) and row["next_follow_up_at"] == date(2026, 3, 12)
        assert row["version"] == 1  # derived values never make a user's open form stale
        assert crm.row("follow_up", f1)["late"] is False

        crm.follow_up(a, datetime(2026, 3, 1, 15, 0))  # an older contact logged late: last stays 3-5
        assert crm.row("customer", a)["next_follow_up_at"] == date(2026, 3, 12)

        crm.update("customer", a, {"grade": "C"})  # grade change: last follow-up + C's 30 days
        assert crm.row("customer", a)["next_follow_up_at"] == date(2026, 4, 4)
        crm.update("customer", none, {"grade": "B"})  # no follow-up yet: created date + 14
        assert crm.row("customer", none)["next_follow_up_at"] == date(2026, 3, 16)

        crm.delete("follow_up", f1)  # the latest one removed: back to 3-1 + 30
        row = crm.row("customer", a)
        assert row["last_follow_up_at"] == datetime(2026, 3, 1, 15, 0) and row["next_follow_up_at"] == date(2026, 3, 31)


def test_late_flag_and_cadence_from_the_stored_dictionary(make_app):
    app = make_app()
    crm = Crm(app)
    with clock.frozen(datetime(2026, 3, 7, 12, 0)):
        cust = crm.customer("戊", "A")
        late = crm.follow_up(cust, datetime(2026, 3, 6, 11, 0))  # 25 hours later
        on_time = crm.follow_up(cust, datetime(2026, 3, 6, 13, 0))  # 23 hours later
        assert crm.row("follow_up", late)["late"] is True and crm.row("follow_up", on_time)["late"] is False
        crm.update("follow_up", on_time, {"followed_at": datetime(2026, 3, 6, 9, 0)})  # corrected time: now late
        assert crm.row("follow_up", on_time)["late"] is True
        assert crm.row("customer", cust)["next_follow_up_at"] == date(2026, 3, 13)
        with app.app_context():  # an admin changes A's cadence in the dictionary table: no migration
            b = app.extensions["crm"]
            items = b.models.system["dict_item"]
            b.db.session.execute(items.update().where(items.c.dictionary == "grade", items.c.code == "A")
                                 .values(attrs={"cadence_days": 3}))
            b.db.session.commit()
        crm.follow_up(cust, datetime(2026, 3, 7, 10, 0))
        assert crm.row("customer", cust)["next_follow_up_at"] == date(2026, 3, 10)


def test_remind_per_owner_for_a_frozen_date_notifies_once(make_app):
    app = make_app()
    crm = Crm(app)
    rep1 = crm.user("rep_one", "sales_rep", "sales_east")
    rep2 = crm.user("rep_two", "sales_rep", "sales_east")
    rep3 = crm.user("rep_three", "sales_rep", "sales_south")
    with clock.frozen(datetime(2026, 3, 1, 8, 0)):
        due = crm.customer("今日到期", "A", rep1)            # 3-8
        over = crm.customer("逾期", "A", rep1)                # follow-up 2-20 → 2-27
        crm.follow_up(over, datetime(2026, 2, 20, 10, 0), rep1)
        crm.customer("未到期", "B", rep1)                     # 3-15
        over2 = crm.customer("逾期二", "A", rep2)
        crm.follow_up(over2, datetime(2026, 2, 25, 10, 0), rep2)  # 3-4
        crm.customer("只有未到期", "C", rep3)                  # 3-31: rep3 gets nothing
    assert crm.row("customer", due)["next_follow_up_at"] == date(2026, 3, 8)

    runner = app.test_cli_runner()
    with clock.frozen(datetime(2026, 3, 8, 7, 30)):
        first = runner.invoke(args=["crm", "remind"])  # today = the frozen date
        assert first.exit_code == 0, first.output
        assert "2026-03-08: 2 owner(s), 1 due today, 2 overdue; 2 new notification(s)" in first.output
        assert re.search(r"rep_one\): 1 due today, 1 overdue \(oldest 2026-02-27\)", first.output)
        assert re.search(r"rep_two\): 0 due today, 1 overdue", first.output) and "rep_three" not in first.output
        again = runner.invoke(args=["crm", "remind", "--date", "2026-03-08"])
        assert "0 new notification(s)" in again.output and "rep_one" in again.output
    with app.app_context():
        b = app.extensions["crm"]
        n = b.models.system["notification"]
        rows = b.db.session.execute(select(n.c.user_id, n.c.kind, n.c.dedupe_key, n.c.detail)).all()
    assert sorted((r.user_id, r.kind, r.dedupe_key) for r in rows) == [
        (rep1, "follow_up_due", "2026-03-08"), (rep2, "follow_up_due", "2026-03-08")]
    assert {r.user_id: (r.detail["due_today"], r.detail["overdue"]) for r in rows} == {rep1: (1, 1), rep2: (0, 1)}

    # the job does the same for the clock's day (a new day: new notices; the same day: none)
    with clock.frozen(datetime(2026, 3, 9, 6, 0)):
        out = runner.invoke(args=["crm", "jobs", "run", "follow_up_remind"]).output
        assert "ran follow_up_remind (crm_meta.process): ok — 2026-03-09: 2 owner(s), 0 due today, 3 overdue, 2 new" in out
        assert ", 0 new" in runner.invoke(args=["crm", "jobs", "run", "follow_up_remind"]).output

    # the rep sees their reminders in the app and marks them read (POST + CSRF, own notices only)
    ui = login(app.test_client(), "rep_one", PASSWORD)
    page = ui.get("/crm/notifications/").get_data(as_text=True)
    assert page.count('class="crm-unread-row"') == 2 and "2026-03-08 跟进提醒：今日到期 1 个客户，逾期 1 个" in page
    assert "未读通知: <strong>2</strong>" in ui.get("/").get_data(as_text=True)
    ids = [int(i) for i in re.findall(r'data-notice="(\d+)"', page)]
    assert ui.post(f"/crm/notifications/{ids[0]}/read").status_code == 400  # no CSRF token
    token = csrf_token(ui, "/crm/notifications/")
    assert ui.post(f"/crm/notifications/{ids[0]}/read", data={"csrf_token": token}).status_code == 302
    other = login(app.test_client(), "rep_two", PASSWORD)
    theirs = int(re.findall(r'data-notice="(\d+)"', other.get("/crm/notifications/").get_data(as_text=True))[0])
    assert ui.post(f"/crm/notifications/{theirs}/read", data={"csrf_token": token}).status_code == 404
    assert ui.get("/crm/notifications/").get_data(as_text=True).count('class="crm-unread-row"') == 1
    ui.post("/crm/notifications/read-all", data={"csrf_token": token})
    assert "未读通知: <strong>0</strong>" in ui.get("/").get_data(as_text=True)
    assert other.get("/crm/notifications/").get_data(as_text=True).count('class="crm-unread-row"') == 2


def _set_due(app, ids, day):
    with app.app_context():
        b = app.extensions["crm"]
        t = b.models.model("customer").__table__
        b.db.session.execute(t.update().where(t.c.id.in_(ids)).values(next_follow_up_at=day))
        b.db.session.commit()


def _listed(html: str) -> set[int]:
    return {int(i) for i in re.findall(r'data-customer="(\d+)"', html)}


def test_my_followups_are_scoped_to_the_user_or_the_managers_department(make_app):
    world = World(make_app(CRM_DISABLED_PLUGINS="crm_lifecycle"))
    app = world.app
    customers = {owner: rid for (owner, entity), rid in world.records.items() if entity == "customer"}
    with clock.frozen(datetime(2026, 3, 10, 9, 0)):
        _set_due(app, list(customers.values()), date(2026, 3, 10))
        _set_due(app, [customers["same_dept"]], date(2026, 3, 2))  # overdue
        _set_due(app, [customers["child_dept"]], date(2026, 3, 14))  # upcoming
        rep = world.browser("sales_rep_me").get("/crm/followups/").get_data(as_text=True)
        assert _listed(rep) == {customers["sales_rep_me"]}
        assert 'data-mode="team"' not in rep
        manager = world.browser("sales_manager_me")
        team = manager.get("/crm/followups/").get_data(as_text=True)  # default: the department tree
        in_sales = {rid for owner, rid in customers.items() if owner != "other_dept"}
        assert _listed(team) == in_sales
        overdue = team.split("crm-followups-overdue")[1].split("crm-followups-today")[0]
        assert _listed(overdue) == {customers["same_dept"]}
        upcoming = team.split("crm-followups-upcoming")[1]
        assert _listed(upcoming) == {customers["child_dept"]}
        assert _listed(manager.get("/crm/followups/?who=mine").get_data(as_text=True)) == {customers["sales_manager_me"]}
        dash = manager.get("/").get_data(as_text=True)
        assert re.search(r'crm-followups-overdue">1<', dash) and re.search(r'crm-followups-upcoming">1<', dash)
        # a user reading every customer may look at everyone's; an owner of none has an empty list
        admin = world.browser("admin_me")
        assert _listed(admin.get("/crm/followups/").get_data(as_text=True)) == {customers["admin_me"]}
        assert _listed(admin.get("/crm/followups/?who=all").get_data(as_text=True)) == set(customers.values())
        # every role reading customers has the screen and its menu entry
        for role in world.registry.roles:
            ui = world.browser(f"{role.name}_me")
            assert ui.get("/crm/followups/").status_code == 200, role.name
            assert "/crm/followups/" in ui.get("/customer/list/").get_data(as_text=True), role.name


def test_crm_check_refuses_cadence_days_that_are_not_positive_numbers(tmp_path):
    """Needs the attrs check wired into crm_meta/schema/validate.py (see the report of issue 5)."""
    from crm_meta.cli import crm

    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    path = schemas / "dictionaries.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("attrs: {cadence_days: 7,", "attrs: {cadence_days: 0,")
    text = text.replace("attrs: {cadence_days: 14,", 'attrs: {cadence_days: "two weeks",')
    path.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    line_a = next(i for i, s in enumerate(lines, 1) if "cadence_days: 0" in s)
    line_b = next(i for i, s in enumerate(lines, 1) if 'cadence_days: "two weeks"' in s)
    result = CliRunner().invoke(crm, ["check", str(schemas)])
    assert result.exit_code == 1, result.output
    out = result.output
    assert re.search(rf"dictionaries\.yaml:{line_a}:\d+: .*cadence_days.*positive", out), out
    assert re.search(rf"dictionaries\.yaml:{line_b}:\d+: .*cadence_days.*positive", out), out
