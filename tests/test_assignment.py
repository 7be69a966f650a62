"""Assignment rules (schemas/assignment.yaml, crm_meta/assignment.py): a new customer or ticket gets
its owner from the first matching rule — round-robin or least-loaded among the members of a
department — and a manual change of owner is an audited ``reassign`` event. SQLite and PostgreSQL."""
from __future__ import annotations

import secrets
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from support import ADMIN_PASSWORD, Api, login

from crm_meta.assignment import applying, suspended
from crm_meta.metadata.model import Label
from crm_meta.services import assignment as rules
from crm_meta.services.records import Actor, RecordService

CUSTOMER = {"name": "甲公司", "customer_type": "prospect", "industry": "retail", "contact_name": "王五",
            "contact_phone": "13900001111"}
# name, role, department, manager
STAFF = [
    ("e1", "sales_rep", "sales_east", False),
    ("e2", "sales_rep", "sales_east", False),
    ("east_boss", "sales_manager", "sales_east", True),
    ("s1", "sales_rep", "sales_south", False),
    ("s2", "sales_rep", "sales_south", False),
    ("agent", "service", "service", False),
    ("service_boss", "service", "service", True),
]


class Team:
    """The app plus users in departments (created as the system: no rule touches them)."""

    def __init__(self, app, staff=STAFF):
        from crm_meta.services.members import set_member

        self.app = app
        self.ids: dict[str, int] = {}
        self.passwords: dict[str, str] = {}
        with app.app_context():
            b = app.extensions["crm"]
            sm = app.appbuilder.sm
            for name, role, department, manager in staff:
                pw = secrets.token_urlsafe(12) + "a1"
                u = sm.add_user(name, name, "T", f"{name}@t.invalid", sm.find_role(role), pw)
                set_member(b.db.session, b.registry, b.models.system["member"], u.id, department, manager)
                self.ids[name], self.passwords[name] = u.id, pw
            b.db.session.commit()
            self.ids["admin"] = sm.find_user(username="admin").id
        self.passwords["admin"] = ADMIN_PASSWORD
        self.names = {v: k for k, v in self.ids.items()}

    def api(self, username: str = "admin") -> Api:
        c = self.app.test_client()
        resp = c.post("/api/v1/security/login",
                      json={"username": username, "password": self.passwords[username], "provider": "db"})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return Api(c, resp.json["access_token"])

    def owner_of(self, resp) -> str:
        assert resp.status_code == 201, resp.get_data(as_text=True)
        return self.names[resp.json["result"]["owner"]]

    def rows(self, stmt):
        with self.app.app_context():
            return self.app.extensions["crm"].db.session.execute(stmt).all()

    def system_create(self, entity: str, data: dict, owner: str) -> int:
        """A record placed by code (bare Actor): the rules leave it alone."""
        with self.app.app_context():
            b = self.app.extensions["crm"]
            obj = RecordService(b.db.session, b.models, entity, Actor(self.ids[owner])).create(
                {**data, "owner": self.ids[owner]})
            b.db.session.commit()
            return obj.id

    def add_rule(self, code: str, order: int, **attrs) -> None:
        """An admin's rule added as data (a crm_dict_item row), no code, no restart."""
        with self.app.app_context():
            b = self.app.extensions["crm"]
            b.db.session.execute(b.models.system["dict_item"].insert().values(
                dictionary=rules.DICTIONARY, code=code, label_zh=code, label_en=code, sort_order=order,
                active=True, attrs=attrs, origin="admin"))
            b.db.session.commit()


@pytest.fixture
def team(make_app) -> Team:
    return Team(make_app(CRM_DISABLED_PLUGINS="crm_lifecycle"))


def _customer(**kw):
    return {**CUSTOMER, "name": f"客户{secrets.token_hex(3)}", **kw}


def _events(team: Team, action: str, entity: str = "customer"):
    with team.app.app_context():
        t = team.app.extensions["crm"].models.system["audit"]
    return team.rows(select(t.c.record_id, t.c.field, t.c.old_value, t.c.new_value, t.c.detail, t.c.username)
                     .where(t.c.action == action, t.c.entity == entity).order_by(t.c.id))


def test_region_rule_round_robin_cycles_through_members_in_order(team):
    api = team.api()
    owners = [team.owner_of(api.post("/api/v1/customer/", json=_customer(region="east"))) for _ in range(5)]
    assert owners == ["e1", "e2", "e1", "e2", "e1"]  # managers are skipped while others are there
    south = [team.owner_of(api.post("/api/v1/customer/", json=_customer(region="south"))) for _ in range(3)]
    assert south == ["s1", "s2", "s1"]  # each rule has its own turn
    last = api.post("/api/v1/customer/", json=_customer(region="east"))
    assert team.owner_of(last) == "e2" and last.json["result"]["department"] == "sales_east"
    events = _events(team, "assign")
    assert len(events) == 9
    rid, field, old, new, detail, who = events[-1]
    assert rid == last.json["id"] and field == "owner" and who == "admin"
    assert old.endswith("(admin)") and new == "e2 T (e2)"
    assert detail == {"rule": "customer_east", "strategy": "round_robin", "department": "sales_east"}


def test_rules_are_data_first_match_wins_and_industry_counts(team):
    api = team.api()
    team.add_rule("finance_south", -1, entity="customer", industry="finance", department="sales_south",
                  strategy="round_robin")
    assert team.owner_of(api.post("/api/v1/customer/", json=_customer(region="east", industry="finance"))) == "s1"
    assert team.owner_of(api.post("/api/v1/customer/", json=_customer(region="east", industry="retail"))) == "e1"
    # two conditions must both hold; field + value with several codes
    team.add_rule("big_retail", -2, entity="customer", industry="retail", field="size", value="large,medium",
                  department="service", include_managers=True)
    assert team.owner_of(api.post("/api/v1/customer/", json=_customer(
        region="east", industry="retail", size="large"))) == "agent"
    assert team.owner_of(api.post("/api/v1/customer/", json=_customer(
        region="east", industry="retail", size="small"))) == "e2"


def test_least_loaded_picks_the_member_with_fewest_open_records(team):
    for _ in range(2):
        team.system_create("customer", _customer(), "e1")
    team.system_create("customer", _customer(), "e2")
    for _ in range(3):  # churned customers are not open (closed_field: customer_type, closed_values: churned)
        team.system_create("customer", _customer(customer_type="churned"), "e2")
    api = team.api()
    assert team.owner_of(api.post("/api/v1/customer/", json=_customer(region="north"))) == "e2"  # 1 open vs 2
    assert team.owner_of(api.post("/api/v1/customer/", json=_customer(region="northeast"))) == "e1"  # 2 vs 2: lower id
    assert team.owner_of(api.post("/api/v1/customer/", json=_customer(region="north"))) == "e2"  # 3 vs 2
    models = team.app.extensions["crm"].models
    with team.app.app_context():
        session = team.app.extensions["crm"].db.session
        rule = next(r for r in rules.load_rules(session, models.system["dict_item"], models.registry, "customer")
                    if r.code == "customer_north")
        counts = rules.loads(session, models, models.registry.entity("customer"), rule,
                             [team.ids["e1"], team.ids["e2"], team.ids["s1"]])
    assert counts == {team.ids["e1"]: 3, team.ids["e2"]: 3, team.ids["s1"]: 0}


def test_feedback_tickets_go_to_service_counting_open_tickets_only(team):
    api = team.api()
    cid = team.system_create("customer", _customer(), "e1")
    ticket = {"customer": cid, "feedback_type": "complaint", "description": "设备故障"}
    first = api.post("/api/v1/feedback/", json=ticket)
    assert team.owner_of(first) == "agent"  # the manager takes tickets only when nobody else is there
    assert first.json["result"]["department"] == "service"
    assert team.owner_of(api.post("/api/v1/feedback/", json=ticket)) == "agent"
    assert _events(team, "assign", "feedback")[-1][4]["rule"] == "feedback_service"


def test_no_rule_matched_explicit_owners_and_team_members_keep_the_owner(team):
    api = team.api()
    assert team.owner_of(api.post("/api/v1/customer/", json=_customer())) == "admin"  # no region: no rule
    chosen = api.post("/api/v1/customer/", json=_customer(region="east", owner=team.ids["s2"]))
    assert team.owner_of(chosen) == "s2"  # somebody else chosen on purpose: respected
    e1 = team.api("e1")
    assert team.owner_of(e1.post("/api/v1/customer/", json=_customer(region="east"))) == "e1"  # in the team
    assert _events(team, "assign") == []
    # a rep entering a lead of another region hands it to that region's team, and no longer sees it
    handed = e1.post("/api/v1/customer/", json=_customer(region="south"))
    assert team.owner_of(handed) == "s1" and handed.json["result"]["department"] == "sales_south"
    assert e1.get(f"/api/v1/customer/{handed.json['id']}").status_code == 404
    assert team.api("s1").get(f"/api/v1/customer/{handed.json['id']}").status_code == 200
    # the form (owner pre-filled with me) goes through the same rule
    ui = login(team.app.test_client(), "e1", team.passwords["e1"])
    from support import csrf_token

    token = csrf_token(ui, "/customer/add")
    resp = ui.post("/customer/add", data={**_customer(region="south", name="表单客户"), "owner": str(team.ids["e1"]),
                                          "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    with team.app.app_context():
        b = team.app.extensions["crm"]
        model = b.models.model("customer")
        owner = b.db.session.execute(select(model.owner_id).where(model.name == "表单客户")).scalar_one()
    assert team.names[owner] == "s2"


def test_a_department_without_members_and_a_broken_rule_leave_the_owner(team):
    api = team.api()
    team.add_rule("nobody_there", -5, entity="customer", field="region", value="west", department="marketing")
    team.add_rule("broken", -9, entity="customer", field="regoin", value="east", department="sales_east")
    assert team.owner_of(api.post("/api/v1/customer/", json=_customer(region="west"))) == "admin"
    assert team.owner_of(api.post("/api/v1/customer/", json=_customer(region="east"))) == "e1"  # broken: skipped


def test_reassignment_is_audited_with_names_and_shown_in_history(team):
    api = team.api()
    created = api.post("/api/v1/customer/", json=_customer(region="east"))
    rid = created.json["id"]
    assert team.owner_of(created) == "e1"
    resp = api.put(f"/api/v1/customer/{rid}", json={"owner": team.ids["e2"], "version": created.json["result"]["version"]})
    assert resp.status_code == 200, resp.json
    events = _events(team, "reassign")
    assert len(events) == 1
    _, field, old, new, detail, who = events[0]
    assert (field, old, new, who) == ("owner", "e1 T (e1)", "e2 T (e2)", "admin")
    assert detail == {"field": "owner", "from_id": team.ids["e1"], "to_id": team.ids["e2"]}
    # an edit that keeps the owner is no reassignment
    assert api.put(f"/api/v1/customer/{rid}", json={"remark": "备注", "version": resp.json["result"]["version"]}
                   ).status_code == 200
    assert len(_events(team, "reassign")) == 1
    ui = login(team.app.test_client())
    html = ui.get(f"/customer/show/{rid}").get_data(as_text=True)
    assert "转交负责人" in html and "e1 T (e1)" in html and "e2 T (e2)" in html  # the action by its label
    audit = ui.get("/crm/audit/?action=reassign").get_data(as_text=True)
    assert "e2 T (e2)" in audit


def test_code_that_places_owners_is_left_alone_unless_it_asks(team):
    models = team.app.extensions["crm"].models
    with team.app.app_context():
        session = team.app.extensions["crm"].db.session
        admin = team.ids["admin"]
        bare = RecordService(session, models, "customer", Actor(admin))
        assert bare.create(_customer(region="east")).owner_id == admin  # a script's deliberate owner
        with applying():
            system = RecordService(session, models, "customer", Actor(None))
            routed = system.create(_customer(region="east", owner=team.ids["s1"]))  # the owner is a fallback
            assert routed.owner_id == team.ids["e1"] and routed.department == "sales_east"
            assert system.create(_customer(owner=team.ids["s1"])).owner_id == team.ids["s1"]  # no rule
        person = RecordService(session, models, "customer", Actor(admin, "zh", "admin"))
        with suspended():
            assert person.create(_customer(region="east")).owner_id == admin
        assert person.create(_customer(region="east")).owner_id == team.ids["e2"]
        session.commit()


def test_round_robin_turns_are_shared_by_concurrent_writers(team):
    """Several workers creating at once: the turn is one atomic upsert, so the members get exactly equal
    shares (no member skipped or given a turn twice)."""
    models = team.app.extensions["crm"].models
    with team.app.app_context():
        engine = team.app.extensions["crm"].db.engine
    owners, errors = [], []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            with applying():
                for i in range(6):
                    with Session(engine) as session:
                        obj = RecordService(session, models, "customer", Actor(None)).create(
                            _customer(region="south", owner=team.ids["admin"], name=f"并发{n}-{i}"))
                        session.commit()
                        with lock:
                            owners.append(obj.owner_id)
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(team.names[o] for o in owners) == ["s1"] * 12 + ["s2"] * 12


def test_declared_rules_are_checked_against_the_dictionary(team):
    registry = team.app.extensions["crm"].registry
    assert rules.check_rules(registry) == []
    label = Label("x", "x")
    for attrs, problem in [
        ({"department": "sales"}, "attrs.entity is missing"),
        ({"entity": "customer"}, "attrs.department is missing"),
        ({"entity": "nope", "department": "sales"}, "unknown entity"),
        ({"entity": "customer", "department": "nowhere"}, "unknown department"),
        ({"entity": "customer", "department": "sales", "strategy": "random"}, "strategy must be one of"),
        ({"entity": "customer", "department": "sales", "field": "regoin", "value": "east"}, "no field 'regoin'"),
        ({"entity": "customer", "department": "sales", "region": "mars"}, "mars not in dictionary 'region'"),
        ({"entity": "customer", "department": "sales", "field": "region"}, "without attrs.value"),
        ({"entity": "customer", "department": "sales", "closed_values": "x"}, "without attrs.closed_field"),
    ]:
        with pytest.raises(ValueError, match=problem):
            rules.rule_from_item("r", label, attrs, registry)
    rule = rules.rule_from_item("r", label, {"entity": "customer", "department": "sales", "tags": "key_account",
                                             "field": "region", "value": "east, south"}, registry)
    assert rules.matches(rule, {"region": "south", "tags": ["price_sensitive", "key_account"]})
    assert not rules.matches(rule, {"region": "south", "tags": ["price_sensitive"]})
    assert not rules.matches(rule, {"region": "north", "tags": ["key_account"]})
