"""The data dictionary screen (/crm/dictionaries/) and REST API (/api/v1/dictionaries/): items added,
edited, reordered, deactivated — offered (or not) on the very next request, old records still
readable, every change audited, refusals change nothing, admins only, and a restart (with a changed
YAML) keeps the admin's edits — on SQLite and PostgreSQL."""
from __future__ import annotations

import re
import shutil
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import func, select

from crm_meta.services import clock
from support import csrf_token, login

ROOT = Path(__file__).resolve().parent.parent
CUSTOMER = {"customer_type": "prospect", "industry": "internet", "contact_name": "王五",
            "contact_phone": "13700000000"}
REP_PASSWORD = "Dict-admin-pw-2026!"


def _system(app):
    return app.extensions["crm"]


def items_of(app, name: str) -> dict[str, dict]:
    with app.app_context():
        b = _system(app)
        t = b.models.system["dict_item"]
        rows = b.db.session.execute(select(t).where(t.c.dictionary == name)).mappings()
        return {r["code"]: dict(r) for r in rows}


def snapshot(app) -> tuple[list, int]:
    with app.app_context():
        b = _system(app)
        t, a = b.models.system["dict_item"], b.models.system["audit"]
        rows = sorted(tuple(sorted((k, str(v)) for k, v in r.items()))
                      for r in b.db.session.execute(select(t)).mappings())
        return rows, b.db.session.execute(select(func.count()).select_from(a)).scalar()


def audit_of(app) -> list[dict]:
    with app.app_context():
        b = _system(app)
        a = b.models.system["audit"]
        return [dict(r) for r in b.db.session.execute(select(a).where(a.c.action == "dictionary")
                                                      .order_by(a.c.id)).mappings()]


def options(html: str, name: str) -> list[str]:
    """The option values of the <select name=...> on a page, in order."""
    m = re.search(rf'<select[^>]*name="{name}"[^>]*>(.*?)</select>', html, re.S)
    assert m, f"no select {name}"
    return re.findall(r'<option[^>]*value="([^"]*)"', m.group(1))


def post(client, url: str, page: str, **data):
    return client.post(url, data={**data, "csrf_token": csrf_token(client, page)})


def create_customer(api, **values):
    resp = api.post("/api/v1/customer/", json={**CUSTOMER, "name": "客户", **values})
    return resp


def add_rep(app) -> None:
    from crm_meta.services.members import set_member

    with app.app_context():
        sm, b = app.appbuilder.sm, _system(app)
        u = sm.add_user("rep_dict", "Rep", "T", "rep_dict@t.invalid", sm.find_role("sales_rep"), REP_PASSWORD)
        set_member(b.db.session, b.registry, b.models.system["member"], u.id, "sales_east")
        b.db.session.commit()


def test_added_items_are_offered_on_the_next_request(app, client, api):
    home = client.get("/crm/dictionaries/").get_data(as_text=True)
    assert "数据字典" in client.get("/").get_data(as_text=True)  # in the menu
    assert 'data-dictionary="industry"' in home and "行业" in home
    assert "aerospace" not in options(client.get("/customer/add").get_data(as_text=True), "industry")

    page = "/crm/dictionaries/industry/"
    assert client.post("/crm/dictionaries/industry/add", data={"code": "x"}).status_code == 400  # no CSRF token
    resp = post(client, "/crm/dictionaries/industry/add", page, code="aerospace", label_zh="航空航天",
                label_en="Aerospace", order="", group="", attrs="", active="y")
    assert resp.status_code == 302
    assert options(client.get("/customer/add").get_data(as_text=True), "industry")[-1] == "aerospace"

    resp = api.post("/api/v1/dictionaries/industry/items",
                    json={"code": "energy", "label": {"zh": "能源", "en": "Energy"}, "attrs": {"color": "#333"}})
    assert resp.status_code == 201, resp.json
    assert resp.json["result"] == {"code": "energy", "label": {"zh": "能源", "en": "Energy"}, "order": 27,
                                   "active": True, "group": None, "attrs": {"color": "#333"}}
    assert options(client.get("/customer/add").get_data(as_text=True), "industry")[-2:] == ["aerospace", "energy"]
    info = api.get("/api/v1/customer/_info").json
    assert "energy" in str(info) and create_customer(api, industry="energy").status_code == 201

    listed = api.get("/api/v1/dictionaries/").json["result"]
    industry = next(d for d in listed if d["name"] == "industry")
    assert industry == {"name": "industry", "label": {"zh": "行业", "en": "Industry"}, "items": 10, "active": 10}
    got = api.get("/api/v1/dictionaries/industry/items").json["result"]
    assert [i["code"] for i in got][-2:] == ["aerospace", "energy"]
    assert {i["code"]: i["origin"] for i in got}["aerospace"] == "admin"
    assert {c: r["origin"] for c, r in items_of(app, "industry").items()} == {
        **{c: "yaml" for c in items_of(app, "industry") if c not in ("aerospace", "energy")},
        "aerospace": "admin", "energy": "admin"}

    entries = audit_of(app)
    assert [(e["detail"]["code"], e["detail"]["op"], e["username"]) for e in entries] == [
        ("aerospace", "add", "admin"), ("energy", "add", "admin")]
    assert entries[0]["entity"] == "dictionary:industry" and "航空航天" in entries[0]["new_value"]
    trail = client.get("/crm/audit/?action=dictionary").get_data(as_text=True)
    assert trail.count('data-action="dictionary"') == 2 and "数据字典修改" in trail


def test_edited_cadence_days_are_used(app, client, api):
    from test_cadence import Crm

    crm = Crm(app)
    page = "/crm/dictionaries/grade/A/edit"
    form = client.get(page).get_data(as_text=True)
    assert "cadence_days" in form and 'name="code"' not in form  # the code is shown, never edited
    with clock.frozen(datetime(2026, 3, 2, 9, 0)):
        before = crm.customer("甲", "A")
        resp = post(client, page, page, label_zh="A级（重点）", label_en="A (key)", order="0", group="",
                    attrs='{"cadence_days": 3, "color": "#c0392b"}', active="y")
        assert resp.status_code == 302, resp.get_data(as_text=True)
        after = crm.customer("乙", "A")
        # The grade's existing customers are recomputed at once (3 days instead of 7), new ones use it too.
        assert crm.row("customer", before)["next_follow_up_at"] == date(2026, 3, 5)
        assert crm.row("customer", after)["next_follow_up_at"] == date(2026, 3, 5)
        resp = api.put("/api/v1/dictionaries/grade/items/B", json={"attrs": {"cadence_days": 1}})
        assert resp.status_code == 200 and resp.json["result"]["attrs"] == {"cadence_days": 1}
        assert resp.json["result"]["label"] == {"zh": "B级", "en": "B"}  # keys not sent: unchanged
        assert crm.row("customer", crm.customer("丙", "B"))["next_follow_up_at"] == date(2026, 3, 3)
    row = items_of(app, "grade")["A"]
    assert (row["label_zh"], row["attrs"], row["origin"]) == ("A级（重点）", {"cadence_days": 3, "color": "#c0392b"},
                                                              "admin")
    assert items_of(app, "grade")["C"]["origin"] == "yaml"
    show = client.get(f"/customer/show/{after}").get_data(as_text=True)
    assert "A级（重点）" in show
    changes = {(e["detail"]["code"], e["field"]): (e["old_value"], e["new_value"]) for e in audit_of(app)}
    assert changes[("A", "label_zh")] == ("A级（高价值）", "A级（重点）")
    assert changes[("A", "attrs")] == ('{"cadence_days": 7, "color": "#c0392b"}',
                                       '{"cadence_days": 3, "color": "#c0392b"}')
    assert ("A", "order") not in changes  # unchanged values are not changes
    assert changes[("B", "attrs")][1] == '{"cadence_days": 1}'


def test_deactivated_items_stay_readable_but_are_not_offered(app, client, api):
    rid = create_customer(api, industry="finance", tags=["key_account"]).json["id"]
    page = "/crm/dictionaries/industry/"
    assert post(client, "/crm/dictionaries/industry/finance/active", page, active="0").status_code == 302
    assert items_of(app, "industry")["finance"]["active"] is False

    assert "finance" not in options(client.get("/customer/add").get_data(as_text=True), "industry")
    listing = client.get("/customer/list/").get_data(as_text=True)
    assert 'value=\\"manufacturing\\"' in listing and 'value=\\"finance\\"' not in listing  # the list's filter
    assert "金融" in listing  # the old record's label
    assert "金融" in client.get(f"/customer/show/{rid}").get_data(as_text=True)
    edit = client.get(f"/customer/edit/{rid}").get_data(as_text=True)
    assert "finance" in options(edit, "industry") and "金融（已停用）" in edit  # its own value stays
    assert "finance" not in str(api.get("/api/v1/customer/_info").json)

    refused = create_customer(api, industry="finance")
    assert refused.status_code == 422 and "已停用" in str(refused.json["message"]["industry"])
    kept = api.put(f"/api/v1/customer/{rid}", json={"industry": "finance", "remark": "仍是金融", "version": 1})
    assert kept.status_code == 200, kept.json
    token = csrf_token(client, f"/customer/edit/{rid}")
    saved = client.post(f"/customer/edit/{rid}", data={
        "name": "客户", "customer_type": "prospect", "industry": "finance", "contact_name": "王五",
        "contact_phone": "13700000000", "owner": str(kept.json["result"]["owner"]), "version": "2",
        "csrf_token": token})
    assert saved.status_code == 302, saved.get_data(as_text=True)
    assert api.get(f"/api/v1/customer/{rid}").json["result"]["industry"] == "finance"

    resp = api.put("/api/v1/dictionaries/industry/items/finance", json={"active": True})
    assert resp.status_code == 200 and resp.json["result"]["active"] is True
    assert "finance" in options(client.get("/customer/add").get_data(as_text=True), "industry")
    assert [e["detail"]["op"] for e in audit_of(app)] == ["deactivate", "activate"]


def test_reorder_and_move(app, client, api):
    resp = api.post("/api/v1/dictionaries/source/order", json={"codes": ["cold_call", "referral"]})
    assert resp.status_code == 200, resp.json
    assert [(i["code"], i["order"]) for i in resp.json["result"]] == [
        ("cold_call", 10), ("referral", 20), ("trade_show", 30), ("online_ads", 40), ("website", 50)]
    assert options(client.get("/customer/add").get_data(as_text=True), "source")[1:] == [
        "cold_call", "referral", "trade_show", "online_ads", "website"]
    page = "/crm/dictionaries/source/"
    assert post(client, "/crm/dictionaries/source/website/move", page, direction="up").status_code == 302
    assert post(client, "/crm/dictionaries/source/cold_call/move", page, direction="up").status_code == 302  # first
    assert options(client.get("/customer/add").get_data(as_text=True), "source")[1:] == [
        "cold_call", "referral", "trade_show", "website", "online_ads"]
    html = client.get(page).get_data(as_text=True)
    assert re.findall(r'data-code="([^"]+)"', html) == ["cold_call", "referral", "trade_show", "website", "online_ads"]
    assert {c: r["origin"] for c, r in items_of(app, "source").items()} == {
        "cold_call": "admin", "referral": "admin", "trade_show": "admin", "online_ads": "admin", "website": "admin"}
    entries = audit_of(app)
    assert [e["detail"]["op"] for e in entries] == ["reorder", "reorder"]  # the no-op move wrote nothing
    assert entries[0]["old_value"] == "trade_show,online_ads,referral,website,cold_call"
    assert entries[0]["new_value"] == "cold_call,referral,trade_show,online_ads,website"


def test_refusals_change_nothing(app, client, api):
    before = snapshot(app)
    cases = [
        ("post", "/api/v1/dictionaries/nope/items", {"code": "x", "label": {"zh": "x", "en": "x"}}, 404, ""),
        ("post", "/api/v1/dictionaries/grade/items", {"code": "A", "label": {"zh": "甲", "en": "A"}}, 400, "code"),
        ("post", "/api/v1/dictionaries/grade/items", {"code": "bad code!", "label": {"zh": "x", "en": "x"}}, 400,
         "code"),
        ("post", "/api/v1/dictionaries/grade/items", {"code": "D", "label": {"zh": " ", "en": "D"}}, 400, "label"),
        ("post", "/api/v1/dictionaries/grade/items", {"code": "D", "label": {"zh": "丁", "en": "D"},
                                                      "attrs": [1, 2]}, 400, "attrs"),
        ("post", "/api/v1/dictionaries/grade/items", {"code": "D", "label": {"zh": "丁", "en": "D"},
                                                      "attrs": {"cadence_days": -1}}, 400, "attrs"),
        ("post", "/api/v1/dictionaries/grade/items", {"code": "D", "label": {"zh": "丁", "en": "D"},
                                                      "colour": "red"}, 400, "colour"),
        ("post", "/api/v1/dictionaries/grade/items", ["D"], 400, ""),
        ("put", "/api/v1/dictionaries/grade/items/Z", {"active": False}, 404, ""),
        ("put", "/api/v1/dictionaries/grade/items/A", {"code": "AA"}, 400, "code"),
        ("put", "/api/v1/dictionaries/grade/items/A", {"order": "first", "active": "maybe"}, 400, "order"),
        ("put", "/api/v1/dictionaries/department/items/sales",
         {"attrs": {"parent": "sales_east"}}, 400, "attrs"),  # would make a loop
        ("post", "/api/v1/dictionaries/grade/order", {"codes": ["A", "Z"]}, 400, "codes"),
        ("post", "/api/v1/dictionaries/grade/order", {"codes": ["A", "A"]}, 400, "codes"),
        ("post", "/api/v1/dictionaries/grade/order", {"codes": "A,B"}, 400, "codes"),
    ]
    for method, url, body, status, key in cases:
        resp = getattr(api, method)(url, json=body)
        assert resp.status_code == status, (url, body, resp.json)
        assert resp.json["message"], (url, body)
        if status == 400:
            assert key in resp.json["errors"], (url, body, resp.json)
    many = api.post("/api/v1/dictionaries/grade/items", json={"code": "x y", "label": {"zh": ""}, "attrs": "[1]"})
    assert many.status_code == 400 and set(many.json["errors"]) == {"code", "label", "attrs"}
    assert "代码 “A” 已存在于该字典" in api.post("/api/v1/dictionaries/grade/items", json={
        "code": "A", "label": {"zh": "甲", "en": "A"}}).json["message"]

    page = "/crm/dictionaries/grade/"
    resp = post(client, "/crm/dictionaries/grade/add", page, code="D", label_zh="丁", label_en="D", attrs="{oops")
    assert resp.status_code == 400 and "不是有效的 JSON" in resp.get_data(as_text=True)
    assert 'value="D"' in resp.get_data(as_text=True)  # what was typed stays on the form
    resp = post(client, "/crm/dictionaries/grade/A/edit", "/crm/dictionaries/grade/A/edit", label_zh="",
                label_en="A", order="10", attrs='{"cadence_days": 0}', active="y")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "必须是正数" in html and "中文和英文名称都必填" in html
    assert client.get("/crm/dictionaries/nope/").status_code == 404
    assert client.get("/crm/dictionaries/grade/Z/edit").status_code == 404
    assert snapshot(app) == before


def test_only_administrators(app, client):
    add_rep(app)
    rep = login(app.test_client(), "rep_dict", REP_PASSWORD)
    assert "/crm/dictionaries/" not in rep.get("/").get_data(as_text=True)
    for url in ("/crm/dictionaries/", "/crm/dictionaries/grade/", "/crm/dictionaries/grade/A/edit"):
        assert rep.get(url).status_code == 403, url
    token = csrf_token(rep, "/customer/add")
    assert rep.post("/crm/dictionaries/grade/add", data={"code": "D", "label_zh": "丁", "label_en": "D",
                                                         "csrf_token": token}).status_code == 403
    assert rep.post("/crm/dictionaries/grade/A/active", data={"active": "0", "csrf_token": token}).status_code == 403
    # the same session on REST (cookie + CSRF token), then with a bearer token
    assert rep.get("/api/v1/dictionaries/").status_code == 403
    assert rep.post("/api/v1/dictionaries/grade/items", json={"code": "D", "label": {"zh": "丁", "en": "D"}},
                    headers={"X-CSRFToken": token}).status_code == 403
    from support import Api

    login_resp = app.test_client().post("/api/v1/security/login", json={
        "username": "rep_dict", "password": REP_PASSWORD, "provider": "db"})
    bearer = Api(app.test_client(), login_resp.json["access_token"])
    assert bearer.get("/api/v1/dictionaries/").status_code == 403
    assert bearer.get("/api/v1/dictionaries/grade/items").status_code == 403
    assert bearer.post("/api/v1/dictionaries/grade/items", json={"code": "D", "label": {"zh": "丁", "en": "D"}}
                       ).status_code == 403
    assert bearer.put("/api/v1/dictionaries/grade/items/A", json={"active": False}).status_code == 403
    assert bearer.post("/api/v1/dictionaries/grade/order", json={"codes": ["C"]}).status_code == 403
    assert "D" not in items_of(app, "grade") and items_of(app, "grade")["A"]["active"] is True
    assert audit_of(app) == []
    assert not [p for p in bearer.get("/api/v1/_openapi").json["paths"] if "/dictionaries/" in p]
    # a cookie-authenticated REST write needs the CSRF token, admins included
    assert client.post("/api/v1/dictionaries/grade/items", json={"code": "D", "label": {"zh": "丁", "en": "D"}}
                       ).status_code == 400
    assert "D" not in items_of(app, "grade")


def test_openapi_documents_the_endpoints(api):
    paths = api.get("/api/v1/_openapi").json["paths"]
    assert set(paths["/api/v1/dictionaries/{name}/items"]) >= {"get", "post"}
    assert "put" in paths["/api/v1/dictionaries/{name}/items/{code}"]
    assert "post" in paths["/api/v1/dictionaries/{name}/order"] and "get" in paths["/api/v1/dictionaries/"]


def test_a_restart_keeps_the_admin_edits(make_app, tmp_path):
    from support import ADMIN_PASSWORD, Api

    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    app = make_app(schemas)
    c = app.test_client()
    api = Api(c, c.post("/api/v1/security/login", json={"username": "admin", "password": ADMIN_PASSWORD,
                                                        "provider": "db"}).json["access_token"])
    assert api.put("/api/v1/dictionaries/grade/items/A", json={
        "label": {"zh": "A级（重点）", "en": "A (key)"}, "attrs": {"cadence_days": 3}}).status_code == 200
    assert api.put("/api/v1/dictionaries/grade/items/C", json={"active": False}).status_code == 200
    assert api.post("/api/v1/dictionaries/grade/items", json={
        "code": "D", "label": {"zh": "D级", "en": "D"}, "attrs": {"cadence_days": 60}}).status_code == 201

    from crm_meta.services.dictionary_admin import admin_items

    with app.app_context():
        b = _system(app)
        overlay = admin_items(b.db.session, b.models.system["dict_item"])
    assert overlay == {"grade": [
        {"code": "A", "label": {"zh": "A级（重点）", "en": "A (key)"}, "order": 0, "active": True, "group": None,
         "attrs": {"cadence_days": 3}},
        {"code": "C", "label": {"zh": "C级", "en": "C"}, "order": 2, "active": False, "group": None,
         "attrs": {"cadence_days": 30, "color": "#7f8c8d"}},
        {"code": "D", "label": {"zh": "D级", "en": "D"}, "order": 12, "active": True, "group": None,
         "attrs": {"cadence_days": 60}}]}

    # The YAML changes the same items (and a YAML-only one), so the start-up sync runs.
    text = (schemas / "dictionaries.yaml").read_text(encoding="utf-8")
    text = text.replace("attrs: {cadence_days: 7,", "attrs: {cadence_days: 10,") \
        .replace("{code: B, label: {zh: B级, en: B}", "{code: B, label: {zh: B级（YAML）, en: B}")
    (schemas / "dictionaries.yaml").write_text(text, encoding="utf-8")
    again = make_app(schemas)
    grade = items_of(again, "grade")
    assert (grade["A"]["label_zh"], grade["A"]["attrs"]) == ("A级（重点）", {"cadence_days": 3})
    assert grade["C"]["active"] is False and grade["D"]["attrs"] == {"cadence_days": 60}
    assert grade["B"]["label_zh"] == "B级（YAML）"  # the YAML's own items are still refreshed
    ui = login(again.test_client())
    assert options(ui.get("/customer/add").get_data(as_text=True), "grade") == ["", "A", "B", "D"]
