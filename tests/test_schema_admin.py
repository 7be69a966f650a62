"""The model screens (/crm/schema/) and their REST API (/api/v1/schema/): custom fields and entities are
planned, confirmed and applied; the very next request shows them on forms, lists, search, filters, REST
and OpenAPI; deactivation keeps the data, deletion needs the destructive confirmation; bad input changes
nothing; admins only — on SQLite and PostgreSQL. (The app swaps to a new Flask app after each apply:
everything is observed over HTTP.)"""
from __future__ import annotations

import html as htmllib
import re

from sqlalchemy import create_engine, inspect, text

from support import Api, csrf_token, login

CUSTOMER = {"customer_type": "prospect", "industry": "internet", "contact_name": "王五",
            "contact_phone": "13700000000"}
WECHAT = {"op": "add_field", "entity": "customer", "name": "wechat", "list": True, "search": True, "filters": True,
          "field": {"type": "string", "label": {"zh": "微信", "en": "WeChat"}, "length": 64}}
REP_PASSWORD = "Schema-admin-pw-2026!"


# -- helpers -------------------------------------------------------------------------------------------------

def columns(app, table: str) -> set[str]:
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        insp = inspect(engine)
        return {c["name"] for c in insp.get_columns(table)} if insp.has_table(table) else set()
    finally:
        engine.dispose()


def raw(app, sql: str, **params):
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.begin() as conn:
            return conn.execute(text(sql), params).fetchall()
    finally:
        engine.dispose()


def schema_actions(app) -> list:
    return raw(app, "SELECT entity, field FROM crm_audit WHERE action = 'schema_change' ORDER BY id")


def state(app, api) -> tuple:
    """What a refused change must leave alone: the overlay, the generation and the customer table."""
    got = api.get("/api/v1/schema/").json
    return got["overlay"], got["generation"], columns(app, "customer")


def confirm_inputs(html: str) -> dict[str, str]:
    """The hidden inputs of the plan page's confirm form (asserts there is one)."""
    m = re.search(r'<form[^>]*class="crm-plan-confirm"[^>]*>(.*?)</form>', html, re.S)
    assert m, "no confirm button on the plan page:\n" + html[html.find("crm-schema-plan"):][:2000]
    return {k: htmllib.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"',
                                                          m.group(1))}


def show_plan(client, url: str, page: str, **data):
    resp = client.post(url, data={**data, "csrf_token": csrf_token(client, page)})
    return resp, resp.get_data(as_text=True)


def confirm(client, plan_html: str, **extra):
    return client.post("/crm/schema/apply", data={**confirm_inputs(plan_html), **extra})


def apply(api, body: dict, status: int = 200, **extra):
    resp = api.post("/api/v1/schema/apply", json={**body, **extra})
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.json


def create_customer(api, **values) -> int:
    resp = api.post("/api/v1/customer/", json={**CUSTOMER, "name": "客户", **values})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.json["id"]


def add_rep(app) -> None:
    from crm_meta.services.members import set_member

    with app.app_context():
        sm, b = app.appbuilder.sm, app.extensions["crm"]
        u = sm.add_user("rep_schema", "Rep", "T", "rep_schema@t.invalid", sm.find_role("sales_rep"), REP_PASSWORD)
        set_member(b.db.session, b.registry, b.models.system["member"], u.id, "sales_east")
        b.db.session.commit()


def customer_openapi(api) -> str:
    """The customer API's part of the OpenAPI document, as text."""
    spec = api.get("/api/v1/_openapi").json
    return str({k: v for k, v in spec["components"]["schemas"].items() if k.lower().startswith("customer")}) + \
        str({k: v for k, v in spec["paths"].items() if k.startswith("/api/v1/customer/")})


def wechat_filter(api, value: str):
    return api.get("/api/v1/customer/?q=(filters:!((col:wechat,opr:eq,value:'%s')))" % value)


# -- custom fields -------------------------------------------------------------------------------------------

def test_a_field_added_on_screen_shows_everywhere_on_the_next_request(app, client, api):
    page = client.get("/crm/schema/customer/").get_data(as_text=True)
    assert "/crm/schema/customer/name/edit" not in page  # YAML fields are read-only
    assert "/crm/schema/" in client.get("/").get_data(as_text=True)  # in the menu
    resp, plan = show_plan(client, "/crm/schema/customer/add", "/crm/schema/customer/", name="wechat", type="string",
                           label_zh="微信", label_en="WeChat", length="64", list="y", search="y", filters="y")
    assert resp.status_code == 200 and "add column customer.wechat VARCHAR(64)" in plan
    assert "wechat" not in columns(app, "customer") and 'name="wechat"' not in client.get("/customer/add").get_data(
        as_text=True)  # showing the plan changed nothing
    resp = confirm(client, plan)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/crm/schema/customer/")
    assert "已应用" in client.get("/crm/schema/customer/").get_data(as_text=True)

    form = client.get("/customer/add").get_data(as_text=True)
    assert 'name="wechat"' in form and "微信" in form
    cid = create_customer(api, wechat="wx_9527")
    assert api.get(f"/api/v1/customer/{cid}").json["result"]["wechat"] == "wx_9527"
    listing = client.get("/customer/list/").get_data(as_text=True)
    assert "wx_9527" in listing  # a list column
    assert re.search(r'placeholder="[^"]*微信', listing)  # the quick search looks in it
    assert cid in [r["id"] for r in wechat_filter(api, "wx_9527").json["result"]]  # a filter
    assert "wechat" in customer_openapi(api)
    assert schema_actions(app) == [("customer", "wechat")]
    assert "模型修改" in client.get("/crm/audit/?action=schema_change").get_data(as_text=True)
    overlay = api.get("/api/v1/schema/").json["overlay"]
    assert overlay["fields"] == [{"entity": "customer", "name": "wechat", "active": True, "list": True,
                                  "search": True, "filters": True, "field": WECHAT["field"]}]


def test_the_same_through_rest(app, client, api):
    plan = api.post("/api/v1/schema/plan", json=WECHAT)
    assert plan.status_code == 200, plan.get_data(as_text=True)
    assert [c["text"] for c in plan.json["plan"]["changes"]] == ["add column customer.wechat VARCHAR(64)"]
    assert "wechat" not in columns(app, "customer")
    before = api.get("/api/v1/schema/").json["generation"]
    # a cookie-authenticated write without the CSRF token is refused
    assert client.post("/api/v1/schema/apply", json=WECHAT).status_code == 400
    assert "wechat" not in columns(app, "customer")
    # the plan reviewed must still be the plan: a different one is refused
    stale = apply(api, WECHAT, 409, expect=["add column customer.wechat VARCHAR(10)"])
    assert "changed since the plan" in stale["message"]
    done = apply(api, WECHAT, expect=plan.json["plan"])
    assert done["generation"] == before + 1 and done["plan"]["changes"][0]["text"].startswith("add column")
    assert api.get("/api/v1/schema/").json["generation"] == before + 1
    cid = create_customer(api, wechat="wx_rest")
    assert api.get(f"/api/v1/customer/{cid}").json["result"]["wechat"] == "wx_rest"
    assert 'name="wechat"' in client.get("/customer/add").get_data(as_text=True)
    spec = api.get("/api/v1/_openapi").json
    assert "/api/v1/schema/apply" in spec["paths"] and "wechat" in customer_openapi(api)
    entity = next(e for e in api.get("/api/v1/schema/").json["entities"] if e["name"] == "customer")
    row = next(f for f in entity["fields"] if f["name"] == "wechat")
    assert row["custom"] and row["origin"] == "field" and row["list"] and row["search"] and row["filters"]
    assert next(f for f in entity["fields"] if f["name"] == "name")["custom"] is False


def test_edit_labels_and_placement(app, client, api):
    apply(api, WECHAT)
    cid = create_customer(api, wechat="wx_edit")
    page = "/crm/schema/customer/wechat/edit"
    assert 'value="微信"' in client.get(page).get_data(as_text=True)
    resp, plan = show_plan(client, page, page, type="string", label_zh="微信号", label_en="WeChat ID", length="64",
                           filters="y")
    assert resp.status_code == 200 and "crm-plan-empty" in plan  # only the definition changes
    assert confirm(client, plan).status_code == 302
    assert "微信号" in client.get("/customer/add").get_data(as_text=True)
    listing = client.get("/customer/list/").get_data(as_text=True)
    assert "wx_edit" not in listing and not re.search(r'placeholder="[^"]*微信', listing)
    assert cid in [r["id"] for r in wechat_filter(api, "wx_edit").json["result"]]  # still a filter
    # through REST: back to the list, no filter; the label merges
    apply(api, {"op": "update_field", "entity": "customer", "name": "wechat", "field": {"label": {"en": "WX"}},
                "list": True, "filters": False})
    field = api.get("/api/v1/schema/").json["overlay"]["fields"][0]
    assert field["field"]["label"] == {"zh": "微信号", "en": "WX"} and field["list"] and not field["filters"]
    assert "wx_edit" in client.get("/customer/list/").get_data(as_text=True)
    assert wechat_filter(api, "wx_edit").status_code == 400
    assert "wechat" in columns(app, "customer")


def test_deactivate_keeps_the_data_and_reactivate_brings_it_back(app, client, api):
    apply(api, WECHAT)
    cid = create_customer(api, wechat="wx_keep")
    resp, plan = show_plan(client, "/crm/schema/customer/wechat/active", "/crm/schema/customer/", active="0")
    assert resp.status_code == 200 and "crm-plan-empty" in plan
    assert confirm(client, plan).status_code == 302
    assert 'name="wechat"' not in client.get("/customer/add").get_data(as_text=True)
    assert "wechat" not in api.get(f"/api/v1/customer/{cid}").json["result"]
    assert "wechat" not in customer_openapi(api) and "name" in customer_openapi(api)
    assert raw(app, "SELECT wechat FROM customer WHERE id = :id", id=cid) == [("wx_keep",)]  # data kept
    page = client.get("/crm/schema/customer/").get_data(as_text=True)
    assert "crm-inactive" in page and "/crm/schema/customer/wechat/edit" in page
    resp, plan = show_plan(client, "/crm/schema/customer/wechat/active", "/crm/schema/customer/", active="1")
    assert confirm(client, plan).status_code == 302
    assert api.get(f"/api/v1/customer/{cid}").json["result"]["wechat"] == "wx_keep"
    assert 'name="wechat"' in client.get("/customer/add").get_data(as_text=True)
    # REST: active false / null
    apply(api, {"op": "update_field", "entity": "customer", "name": "wechat", "field": {"active": False}})
    assert "wechat" not in api.get(f"/api/v1/customer/{cid}").json["result"]
    assert api.get("/api/v1/schema/").json["overlay"]["fields"][0]["active"] is False


def test_delete_needs_the_destructive_confirmation_and_drops_the_column(app, client, api, tmp_path):
    apply(api, WECHAT)
    create_customer(api, wechat="wx_gone")
    resp, plan = show_plan(client, "/crm/schema/customer/wechat/delete", "/crm/schema/customer/")
    assert "drop column customer.wechat" in plan and "1 row(s) have a value in wechat" in plan
    assert 'name="understand"' in plan
    refused = confirm(client, plan)  # without "I understand"
    assert refused.status_code == 409 and "我已了解" in refused.get_data(as_text=True)
    assert "wechat" in columns(app, "customer")
    assert apply(api, {"op": "delete_field", "entity": "customer", "name": "wechat"}, 409)["message"]
    assert "wechat" in columns(app, "customer")
    assert confirm(client, plan, understand="y").status_code == 302
    assert "wechat" not in columns(app, "customer")
    assert api.get("/api/v1/schema/").json["overlay"]["fields"] == []
    assert list((tmp_path / "instance" / "backups").iterdir())  # the backup taken first
    assert 'name="wechat"' not in client.get("/customer/add").get_data(as_text=True)


# -- custom entities -------------------------------------------------------------------------------------------

PROJECT = {"op": "add_entity", "name": "project", "spec": {
    "label": {"zh": "项目", "en": "Project"}, "menu": "sales", "title": "name",
    "fields": {"name": {"type": "string", "required": True, "label": {"zh": "名称", "en": "Name"}},
               "budget": {"type": "money", "label": {"zh": "预算", "en": "Budget"}}}}}


def test_an_entity_added_through_rest_gets_its_rest_endpoint(app, client, api):
    done = apply(api, PROJECT)
    assert any(c["text"].startswith("add table project") for c in done["plan"]["changes"])
    resp = api.post("/api/v1/project/", json={"name": "新官网", "budget": 5000})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert api.get("/api/v1/project/").json["count"] == 1
    assert client.get("/project/list/").status_code == 200
    # custom fields on a custom entity (extend), and its own fields are editable
    apply(api, {"op": "add_field", "entity": "project", "name": "due", "list": True,
                "field": {"type": "date", "label": {"zh": "截止", "en": "Due"}}})
    apply(api, {"op": "update_field", "entity": "project", "name": "budget", "field": {"label": {"en": "Money"}}})
    resp = api.post("/api/v1/project/", json={"name": "二期", "due": "2026-12-01"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    project = next(e for e in api.get("/api/v1/schema/").json["entities"] if e["name"] == "project")
    assert project["custom"] and {f["name"]: f["label"]["en"] for f in project["fields"]} == {
        "name": "Name", "budget": "Money", "due": "Due"}
    # deleting the entity drops its table (destructive)
    assert apply(api, {"op": "delete_entity", "name": "project"}, 409)
    assert "project" in {t for t in inspect_tables(app)}
    apply(api, {"op": "delete_entity", "name": "project"}, allow_destructive=True)
    assert "project" not in inspect_tables(app)
    assert api.get("/api/v1/project/").status_code == 404
    assert api.get("/api/v1/schema/").json["overlay"] == {"fields": [], "entities": []}


def inspect_tables(app) -> set[str]:
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_an_entity_added_on_screen(app, client, api):
    assert client.get("/crm/schema/new").status_code == 200
    resp, plan = show_plan(client, "/crm/schema/new", "/crm/schema/new", name="contract", label_zh="合同",
                           label_en="Contract", menu="sales", field_name="title", field_label_zh="标题",
                           field_label_en="Title", owned="y")
    assert resp.status_code == 200 and "add table contract" in plan
    assert "contract" not in inspect_tables(app)
    resp = confirm(client, plan)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/crm/schema/contract/")
    assert client.get("/contract/list/").status_code == 200
    index = client.get("/crm/schema/").get_data(as_text=True)
    assert 'data-entity="contract"' in index and 'data-entity="customer"' in index
    assert "合同" in client.get("/").get_data(as_text=True)  # in the Sales menu
    created = api.post("/api/v1/contract/", json={"title": "年度框架合同"})
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.json["result"]["owner"] is not None
    # more fields with the normal add-field flow
    resp, plan = show_plan(client, "/crm/schema/contract/add", "/crm/schema/contract/", name="signed_on",
                           type="date", label_zh="签订日期", label_en="Signed on", list="y")
    assert confirm(client, plan).status_code == 302
    assert 'name="signed_on"' in client.get("/contract/add").get_data(as_text=True)
    assert len(schema_actions(app)) == 2


# -- refusals ----------------------------------------------------------------------------------------------------

def test_bad_input_gives_a_clear_message_and_changes_nothing(app, client, api):
    apply(api, {"op": "add_field", "entity": "customer", "name": "score",
                "field": {"type": "string", "label": "评分", "length": 20}})
    cid = create_customer(api, score="n/a")
    before = state(app, api)
    cases = [
        ({**WECHAT, "name": "select"}, "is an SQL keyword"),
        ({**WECHAT, "name": "created_at"}, "system field"),
        ({**WECHAT, "name": "WeChat"}, "not a valid field name"),
        ({**WECHAT, "name": "name"}, "already has a field 'name'"),
        ({**WECHAT, "name": "score"}, "already has a field 'score'"),
        ({**WECHAT, "entity": "nope"}, "unknown entity"),
        ({**WECHAT, "field": {"type": "enum", "label": "级别"}}, "needs 'dictionary'"),
        ({**WECHAT, "field": {"type": "string", "label": "x", "length": 99999}}, "length"),
        ({"op": "update_field", "entity": "customer", "name": "name", "field": {"label": "x"}},
         "declared in the data dictionary files"),
        ({"op": "delete_entity", "name": "customer"}, "declared in the data dictionary files"),
        ({**PROJECT, "name": "order"}, "is an SQL keyword"),
        ({**PROJECT, "name": "crm_project"}, "reserved for system tables"),
        ({**PROJECT, "name": "customer"}, "already an entity"),
        ({**PROJECT, "name": "schema"}, "reserved for the engine's own URLs"),
        ({"op": "drop_everything"}, "'op' must be one of"),
    ]
    for body, message in cases:
        for endpoint in ("plan", "apply"):
            resp = api.post(f"/api/v1/schema/{endpoint}", json=body)
            assert resp.status_code == 400, (body, resp.get_data(as_text=True))
            assert message in " ".join(resp.json["errors"]), (body, resp.json)
    # blocked by the data: a required field without a default, a type change that cannot convert
    for body, message in [
        ({**WECHAT, "field": {"type": "string", "label": "x", "required": True}}, "has no default"),
        ({"op": "update_field", "entity": "customer", "name": "score", "field": {"type": "integer"}},
         "not a valid whole number"),
    ]:
        plan = api.post("/api/v1/schema/plan", json=body).json["plan"]
        assert plan["blocked"] == 1 and message in str(plan["changes"]), plan
        assert message in apply(api, body, 409)["message"]
    # the screens say the same, and offer no confirm button for a blocked plan
    resp, html = show_plan(client, "/crm/schema/customer/add", "/crm/schema/customer/", name="select",
                           type="string", label_zh="选择", label_en="Select")
    assert resp.status_code == 400 and "SQL keyword" in html and "crm-schema-errors" in html
    resp, html = show_plan(client, "/crm/schema/customer/score/edit", "/crm/schema/customer/score/edit",
                           type="integer", label_zh="评分", label_en="Score")
    assert "not a valid whole number" in html and "crm-plan-refused" in html and "crm-plan-confirm" not in html
    resp, html = show_plan(client, "/crm/schema/new", "/crm/schema/new", name="select", label_zh="x", label_en="x",
                           field_name="name", field_label_zh="名称", field_label_en="Name")
    assert resp.status_code == 400 and "SQL keyword" in html
    assert client.get("/crm/schema/customer/name/edit").status_code == 404  # YAML: no edit page
    assert state(app, api) == before
    assert raw(app, "SELECT score FROM customer WHERE id = :id", id=cid) == [("n/a",)]
    assert len(schema_actions(app)) == 1


def test_only_administrators(app, client, api):
    add_rep(app)
    rep = login(app.test_client(), "rep_schema", REP_PASSWORD)
    assert "/crm/schema/" not in rep.get("/").get_data(as_text=True)
    for url in ("/crm/schema/", "/crm/schema/customer/", "/crm/schema/new"):
        assert rep.get(url).status_code == 403, url
    token = csrf_token(rep, "/customer/add")
    form = {"name": "wechat", "type": "string", "label_zh": "微信", "label_en": "WeChat", "csrf_token": token}
    assert rep.post("/crm/schema/customer/add", data=form).status_code == 403
    assert rep.post("/crm/schema/apply", data={"op": '{"op": "add_field"}', "expect": "[]",
                                               "csrf_token": token}).status_code == 403
    assert rep.get("/api/v1/schema/").status_code == 403
    assert rep.post("/api/v1/schema/apply", json=WECHAT, headers={"X-CSRFToken": token}).status_code == 403
    login_resp = app.test_client().post("/api/v1/security/login", json={
        "username": "rep_schema", "password": REP_PASSWORD, "provider": "db"})
    bearer = Api(app.test_client(), login_resp.json["access_token"])
    assert bearer.get("/api/v1/schema/").status_code == 403
    assert bearer.post("/api/v1/schema/plan", json=WECHAT).status_code == 403
    assert bearer.post("/api/v1/schema/apply", json=WECHAT).status_code == 403
    assert not [p for p in bearer.get("/api/v1/_openapi").json["paths"] if "/schema/" in p]
    assert "wechat" not in columns(app, "customer") and schema_actions(app) == []
    paths = api.get("/api/v1/_openapi").json["paths"]
    assert {"/api/v1/schema/", "/api/v1/schema/plan", "/api/v1/schema/apply"} <= set(paths)
