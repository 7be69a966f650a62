"""Transition effect ``follow_up`` (a follow-up task for the record's customer) and ``notify_owner``:
the customer's next follow-up moves earlier (never later), its owner is notified in zh/en and sees
the customer in "My follow-ups"; nothing happens when the move is refused (requirements, roles, a
plugin) — same transaction; `crm check` refuses the key where there is no customer — SQLite and
PostgreSQL."""
from __future__ import annotations

import re
import shutil
from datetime import date, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from crm_meta import hookimpl
from crm_meta.errors import HookRefused
from crm_meta.services import clock
from support import Api, login
from test_cadence import PASSWORD, ROOT, Crm

T0 = datetime(2026, 3, 2, 9, 0)  # Monday 09:00 UTC; the test server runs in UTC: today is 2026-03-02
TASK_DUE = date(2026, 3, 5)  # schemas/pipelines.yaml: entering 方案提交 → follow up within 3 days


def api_as(app, username: str, password: str = PASSWORD) -> Api:
    c = app.test_client()
    resp = c.post("/api/v1/security/login", json={"username": username, "password": password, "provider": "db"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return Api(c, resp.json["access_token"])


def notices(app, kind: str | None = None) -> list:
    with app.app_context():
        b = app.extensions["crm"]
        n = b.models.system["notification"]
        stmt = select(n).order_by(n.c.id)
        if kind:
            stmt = stmt.where(n.c.kind == kind)
        return list(b.db.session.execute(stmt).mappings())


class Deal:
    """A rep's customer (grade C: due 30 days after entry) and an opportunity of it."""

    def __init__(self, app, crm: Crm, rep: int, grade: str = "C", owner: int | None = None):
        self.app, self.crm = app, crm
        self.customer = crm.customer("甲方公司", grade, owner or rep)
        self.opportunity = crm.create("opportunity", {"name": "ERP 项目", "customer": self.customer,
                                                      "owner": rep}, rep)

    def move(self, api: Api, to: str, **data):
        return api.post(f"/api/v1/opportunity/{self.opportunity}/transition", json={"to": to, **data})

    @property
    def due(self):
        return self.crm.row("customer", self.customer)["next_follow_up_at"]


@pytest.fixture
def crm_app(make_app):
    return make_app(CRM_DISABLED_PLUGINS="crm_lifecycle")


def test_entering_the_proposal_stage_sets_a_follow_up_task_for_the_customer(crm_app):
    app = crm_app
    crm = Crm(app)
    rep = crm.user("rep_a", "sales_rep", "sales_east")
    crm.user("boss_a", "sales_manager", "sales_east", manager=True)
    with clock.frozen(T0):
        deal = Deal(app, crm, rep)
        assert deal.due == date(2026, 4, 1)  # grade C: 30 days
        api = api_as(app, "rep_a")
        assert deal.move(api, "needs_analysis").status_code == 200
        assert notices(app) == []  # no effect declared on this move
        done = deal.move(api, "proposal", key_needs="ERP 对接")
        assert done.status_code == 200, done.json
        row = crm.row("customer", deal.customer)
        assert row["next_follow_up_at"] == TASK_DUE and row["version"] == 1  # derived: no stale forms
        [task] = notices(app, "follow_up_task")
        assert (task["user_id"], task["entity"], task["record_id"]) == (rep, "customer", deal.customer)
        assert task["message"] == "销售机会「ERP 项目」进入「方案提交」：请在 2026-03-05 前跟进客户「甲方公司」（询问客户对方案的反馈）"
        assert task["detail"]["due"] == "2026-03-05" and task["detail"]["record_id"] == deal.opportunity

        # the owner sees it: in the notification list (zh and en, REST too) and in "My follow-ups"
        ui = login(app.test_client(), "rep_a", PASSWORD)
        page = ui.get("/crm/notifications/").get_data(as_text=True)
        assert "请在 2026-03-05 前跟进客户「甲方公司」" in page and f"/customer/show/{deal.customer}" in page
        en = api.get("/api/v1/notifications/?_l_=en").json["result"][0]
        assert en["text"] == ("Opportunity 'ERP 项目' moved to 'Proposal': follow up with customer '甲方公司' by "
                              "2026-03-05 — Ask for the customer's feedback on the proposal"), en["text"]
        agenda = ui.get("/crm/followups/").get_data(as_text=True)
        upcoming = agenda.split("crm-followups-upcoming")[1]
        assert f'data-customer="{deal.customer}"' in upcoming and "2026-03-05" in upcoming

        # back and forth: the task is due earlier only — a later date never replaces an earlier one
        boss = api_as(app, "boss_a")
        assert deal.move(boss, "initial_contact", comment="重新评估").status_code == 200
    with clock.frozen(datetime(2026, 3, 4, 9, 0)):
        assert deal.move(boss, "needs_analysis").status_code == 200
        assert deal.move(boss, "proposal").status_code == 200  # taken by the manager: still the owner's task
        assert deal.due == TASK_DUE  # 3-7 would be later than 3-5
        tasks = notices(app, "follow_up_task")
        assert [(t["user_id"], t["detail"]["due"]) for t in tasks] == [(rep, "2026-03-05"), (rep, "2026-03-07")]
        # the same move again on the same day (after a step back) adds no second notice
        assert deal.move(boss, "initial_contact", comment="再次退回").status_code == 200
        assert deal.move(boss, "needs_analysis").status_code == 200
        assert deal.move(boss, "proposal").status_code == 200
        assert len(notices(app, "follow_up_task")) == 2
        # logging the follow-up fulfils it: the due date comes from the cadence again (3-4 + 30 days)
        crm.follow_up(deal.customer, datetime(2026, 3, 4, 10, 0), rep)
        assert deal.due == date(2026, 4, 3)


def test_the_task_goes_to_the_customers_owner_and_a_customer_without_due_date_gets_one(crm_app):
    app = crm_app
    crm = Crm(app)
    rep = crm.user("rep_b", "sales_rep", "sales_east")
    other = crm.user("rep_c", "sales_rep", "sales_east")
    with clock.frozen(T0):
        deal = Deal(app, crm, rep, grade=None, owner=other)  # the customer is rep_c's, the deal rep_b's
        assert deal.due is None  # no grade, no cadence: no due date
        api = api_as(app, "rep_b")
        assert deal.move(api, "needs_analysis").status_code == 200
        assert deal.move(api, "proposal", key_needs="x").status_code == 200
        assert deal.due == TASK_DUE
        [task] = notices(app, "follow_up_task")
        assert task["user_id"] == other  # the customer's owner, not the one who moved the deal
        assert notices(app, "transition") == []


def test_nothing_happens_when_the_move_is_refused(crm_app):
    app = crm_app
    crm = Crm(app)
    rep = crm.user("rep_d", "sales_rep", "sales_east")
    crm.user("mkt_d", "marketing", "sales_east")
    with clock.frozen(T0):
        deal = Deal(app, crm, rep)
        api = api_as(app, "rep_d")
        assert deal.move(api, "needs_analysis").status_code == 200
        missing = deal.move(api, "proposal")  # key_needs missing: refused before any effect
        assert missing.status_code == 422
        marketing = api_as(app, "mkt_d")  # may read opportunities, not update them
        assert deal.move(marketing, "proposal", key_needs="x").status_code in (403, 404)
        assert deal.due == date(2026, 4, 1) and notices(app) == []


class Veto:
    """A plugin refusing the move after it was written (``crm_after_transition``)."""

    @hookimpl
    def crm_after_transition(self, entity, record, field, source, target):
        if target == "proposal":
            raise HookRefused("方案需先经过评审")


def test_a_plugin_refusing_after_the_move_rolls_the_task_back(make_app):
    app = make_app(CRM_DISABLED_PLUGINS="crm_lifecycle", CRM_EXTRA_PLUGINS=[("veto", Veto())])
    crm = Crm(app)
    rep = crm.user("rep_v", "sales_rep", "sales_east")
    with clock.frozen(T0):
        deal = Deal(app, crm, rep)
        api = api_as(app, "rep_v")
        assert deal.move(api, "needs_analysis").status_code == 200
        refused = deal.move(api, "proposal", key_needs="x")
        assert refused.status_code == 422 and refused.json["message"] == "方案需先经过评审"
        assert deal.due == date(2026, 4, 1)  # unchanged: the task was in the move's transaction
        assert notices(app) == []
        assert crm.row("opportunity", deal.opportunity)["stage"] == "needs_analysis"


def _copy_schemas(tmp_path, edit) -> tuple:
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    path = schemas / "pipelines.yaml"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    return schemas, path


def test_on_a_customer_pipeline_the_task_is_for_the_record_itself(make_app, tmp_path):
    def edit(text):
        old = "      - {from: prospect, to: intent}\n"
        assert old in text
        return text.replace(old, "      - {from: prospect, to: intent, follow_up: {in_days: 2}}\n")

    schemas, _ = _copy_schemas(tmp_path, edit)
    app = make_app(schemas, CRM_DISABLED_PLUGINS="crm_lifecycle")
    crm = Crm(app)
    rep = crm.user("rep_e", "sales_rep", "sales_east")
    with clock.frozen(T0):
        cid = crm.customer("乙方公司", "C", rep)
        api = api_as(app, "rep_e")
        assert api.post(f"/api/v1/customer/{cid}/transition", json={"to": "intent"}).status_code == 200
        assert crm.row("customer", cid)["next_follow_up_at"] == date(2026, 3, 4)
        [task] = notices(app, "follow_up_task")
        assert task["user_id"] == rep and task["message"] == "客户「乙方公司」进入「意向客户」：请在 2026-03-04 前跟进"


def test_crm_check_refuses_follow_up_where_there_is_no_customer(tmp_path):
    from crm_meta.cli import crm

    def edit(text):
        return text + """
  project_status:
    label: {zh: 项目, en: Projects}
    entity: project
    field: status
    transitions:
      - {from: open, to: closed, follow_up: {in_days: 5}}
      - {from: closed, to: open, follow_up: {in_days: 0}}
"""

    schemas, path = _copy_schemas(tmp_path, edit)
    (schemas / "project.yaml").write_text("""version: 1
dictionaries:
  project_status:
    label: {zh: 项目状态, en: Project status}
    items:
      - {code: open, label: {zh: 进行中, en: Open}}
      - {code: closed, label: {zh: 已关闭, en: Closed}}
entities:
  project:
    label: {zh: 项目, en: Project}
    title: name
    fields:
      name: {type: string, length: 100, required: true, label: {zh: 名称, en: Name}}
      customer: {type: string, length: 100, label: {zh: 客户名称, en: Customer name}}
      status: {type: enum, dictionary: project_status, default: open, label: {zh: 状态, en: Status}}
""", encoding="utf-8")
    lines = path.read_text(encoding="utf-8").splitlines()
    line = next(i for i, s in enumerate(lines, 1) if "to: closed, follow_up" in s)
    zero = next(i for i, s in enumerate(lines, 1) if "in_days: 0" in s)
    result = CliRunner().invoke(crm, ["check", str(schemas)])
    assert result.exit_code == 1, result.output
    out = result.output
    assert re.search(rf"pipelines\.yaml:{line}:\d+: .*follow-up task needs the record's customer.*'project'", out), out
    assert re.search(rf"pipelines\.yaml:{zero}:\d+: .*in_days", out), out  # a positive number of days


def test_notify_owner_reaches_the_owner_when_someone_else_moves_the_record(crm_app):
    """``notify_owner`` stored a notice without its dedupe key (NOT NULL): a manager moving a rep's
    deal to 输单 failed with an IntegrityError."""
    app = crm_app
    crm = Crm(app)
    rep = crm.user("rep_f", "sales_rep", "sales_east")
    crm.user("boss_f", "sales_manager", "sales_east", manager=True)
    with clock.frozen(T0):
        deal = Deal(app, crm, rep)
        boss = api_as(app, "boss_f")
        lost = deal.move(boss, "lost", lost_reason="预算取消")
        assert lost.status_code == 200, lost.json
        [notice] = notices(app, "transition")
        assert notice["user_id"] == rep and notice["message"] == f"销售机会 #{deal.opportunity}: 初步接触 → 输单"
        en = api_as(app, "rep_f").get("/api/v1/notifications/?_l_=en").json
        assert en["result"][0]["text"] == f"Opportunity #{deal.opportunity}: First contact → Lost", en
        # the owner moving their own record is not told about it
        assert deal.move(boss, "initial_contact", comment="回来了").status_code == 200
        assert len(notices(app, "transition")) == 1
