"""CRUD for every shipped entity through the screens and the REST API, on SQLite and PostgreSQL."""
from __future__ import annotations

import re
from datetime import date

import pytest
from support import csrf_token
from factories import api_record, form_record

from crm_meta.schema import load_registry
from crm_meta.services.masking import mask

REGISTRY = load_registry(["schemas"])
ENTITIES = [e.name for e in REGISTRY.entities]


def _dicts(app):
    from crm_meta.services.dictionaries import Dictionaries

    with app.app_context():
        b = app.extensions["crm"]
        return Dictionaries.load(b.db.session, b.models.system["dict_item"])


def _admin_id(app) -> int:
    with app.app_context():
        return app.appbuilder.sm.find_user(username="admin").id


def _refs(api, app, entity) -> dict[str, int]:
    """Create the records ``entity`` points at (e.g. a customer for a follow-up) through the API."""
    refs: dict[str, int] = {}
    dicts, uid = _dicts(app), _admin_id(app)
    for f in REGISTRY.entity(entity).user_fields:
        if f.storage == "fk_entity" and f.entity not in refs:
            target = REGISTRY.entity(f.entity)
            resp = api.post(f"/api/v1/{target.name}/", json=api_record(target, _refs(api, app, target.name), uid, dicts))
            assert resp.status_code == 201, resp.json
            refs[f.entity] = resp.json["id"]
    return refs


def _count(api, entity) -> int:
    return api.get(f"/api/v1/{entity}/").json["count"]


@pytest.mark.parametrize("entity", ENTITIES)
def test_rest_crud(app, api, entity):
    ent = REGISTRY.entity(entity)
    body = api_record(ent, _refs(api, app, entity), _admin_id(app), _dicts(app))
    created = api.post(f"/api/v1/{entity}/", json=body)
    assert created.status_code == 201, created.json
    rid = created.json["id"]

    got = api.get(f"/api/v1/{entity}/{rid}")
    assert got.status_code == 200
    result = got.json["result"]
    for name, value in body.items():
        if isinstance(value, float):
            assert result[name] == pytest.approx(value)
        elif isinstance(value, list):
            assert sorted(result[name]) == sorted(value)
        elif ent.field(name).mask:  # sensitive: masked even for admins until revealed
            assert result[name] == mask(ent.field(name).mask, value) != value, name
        else:
            assert result[name] == value, name
    assert result["version"] == 1 and got.headers["ETag"] == '"1"'
    for f in ent.fields:
        if f.type == "autonumber":
            prefix = f.format.split("{")[0]
            assert re.fullmatch(rf"{prefix}{date.today():%Y%m%d}\d{{3,}}", result[f.name])
    assert result["created_by"] == _admin_id(app) and result["created_at"]

    text_field = next(f for f in ent.user_fields if f.type in ("string", "text") and f.editable)
    changed = api.put(f"/api/v1/{entity}/{rid}", json={text_field.name: "已修改 changed", "version": 1})
    assert changed.status_code == 200, changed.json
    assert changed.json["result"][text_field.name] == "已修改 changed"
    assert changed.json["result"]["version"] == 2

    stale = api.put(f"/api/v1/{entity}/{rid}", json={text_field.name: "lost update", "version": 1})
    assert stale.status_code == 409
    unversioned = api.put(f"/api/v1/{entity}/{rid}", json={text_field.name: "lost update"})
    assert unversioned.status_code == 428
    assert api.get(f"/api/v1/{entity}/{rid}").json["result"][text_field.name] == "已修改 changed"

    listed = api.get(f"/api/v1/{entity}/?q=(page_size:100)")
    assert rid in listed.json["ids"]

    assert api.delete(f"/api/v1/{entity}/{rid}").status_code == 200
    assert api.get(f"/api/v1/{entity}/{rid}").status_code == 404


@pytest.mark.parametrize("entity", ENTITIES)
def test_rest_refuses_bad_input_and_keeps_data(app, api, entity):
    ent = REGISTRY.entity(entity)
    before = _count(api, entity)
    required = [f.name for f in ent.user_fields if f.required and f.default is None and f.editable]
    resp = api.post(f"/api/v1/{entity}/", json={"no_such_field": 1})
    assert resp.status_code == 422
    errors = resp.json["message"]
    assert "no_such_field" in errors
    for name in required:
        assert name in errors, f"{name} should be reported missing"
    enum = next((f for f in ent.user_fields if f.storage == "code"), None)
    if enum is not None:
        body = api_record(ent, _refs(api, app, entity), _admin_id(app), _dicts(app))
        body[enum.name] = "not-a-code"
        resp = api.post(f"/api/v1/{entity}/", json=body)
        assert resp.status_code == 422 and enum.name in resp.json["message"]
    assert _count(api, entity) == before


def test_rest_validation_messages(app, api):
    resp = api.post("/api/v1/customer/", json={
        "name": "x" * 201, "contact_phone": "abc", "credit_code": "123", "email": "nope",
        "annual_revenue": -1, "customer_type": 5, "owner": 999999})
    errors = resp.json["message"]
    assert resp.status_code == 422
    assert set(errors) >= {"name", "contact_phone", "credit_code", "email", "annual_revenue",
                           "customer_type", "owner", "industry", "contact_name"}
    assert _count(api, "customer") == 0


@pytest.mark.parametrize("entity", ENTITIES)
def test_screens_crud(app, client, api, entity):
    ent = REGISTRY.entity(entity)
    refs = _refs(api, app, entity)
    form = form_record(ent, refs, _admin_id(app), _dicts(app))
    before = _count(api, entity)

    page = client.get(f"/{entity}/add")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for name in ent.form_fields:
        if ent.field(name).editable and not REGISTRY.pipeline(entity, name):  # pipelines: moved, not edited
            assert ent.field(name).label.zh in html

    assert client.post(f"/{entity}/add", data=form).status_code == 400  # no CSRF token: refused
    assert _count(api, entity) == before

    resp = client.post(f"/{entity}/add", data={**form, "csrf_token": csrf_token(client, f"/{entity}/add")})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-2000:]
    assert _count(api, entity) == before + 1
    rid = max(api.get(f"/api/v1/{entity}/?q=(page_size:100)").json["ids"])

    listing = client.get(f"/{entity}/list/").get_data(as_text=True)
    assert f"/{entity}/show/{rid}" in listing
    assert client.get(f"/{entity}/show/{rid}").status_code == 200

    text_field = next(f for f in ent.user_fields if f.type in ("string", "text") and f.editable and f.name in ent.form_fields)
    edit_token = csrf_token(client, f"/{entity}/edit/{rid}")
    edited = {**form, text_field.name: "界面修改", "version": "1", "csrf_token": edit_token}
    assert client.post(f"/{entity}/edit/{rid}", data=edited).status_code == 302
    assert api.get(f"/api/v1/{entity}/{rid}").json["result"][text_field.name] == "界面修改"

    stale = client.post(f"/{entity}/edit/{rid}", data={**edited, text_field.name: "lost", "version": "1"})
    assert stale.status_code == 200 and "已被他人修改" in stale.get_data(as_text=True)
    assert api.get(f"/api/v1/{entity}/{rid}").json["result"][text_field.name] == "界面修改"

    assert client.get(f"/{entity}/delete/{rid}").status_code == 405  # no state change on GET
    assert api.get(f"/api/v1/{entity}/{rid}").status_code == 200
    token = csrf_token(client, f"/{entity}/list/")
    assert client.post(f"/{entity}/delete/{rid}", data={"csrf_token": token}).status_code == 302
    assert api.get(f"/api/v1/{entity}/{rid}").status_code == 404


def test_screen_shows_field_errors_and_saves_nothing(app, client, api):
    token = csrf_token(client, "/customer/add")
    resp = client.post("/customer/add", data={"name": "", "contact_phone": "abc", "csrf_token": token})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "不是有效的电话号码" in html
    assert _count(api, "customer") == 0


def test_quick_search_and_labels(app, client, api):
    refs, uid, dicts = {}, _admin_id(app), _dicts(app)
    ent = REGISTRY.entity("customer")
    for name in ("上海甲科技有限公司", "北京乙贸易有限公司"):
        body = {**api_record(ent, refs, uid, dicts), "name": name, "industry": "manufacturing"}
        assert api.post("/api/v1/customer/", json=body).status_code == 201
    html = client.get("/customer/list/?q=甲科技").get_data(as_text=True)
    assert "上海甲科技有限公司" in html and "北京乙贸易有限公司" not in html
    assert "制造业" in html  # enum codes are shown as dictionary labels
    client.get("/lang/en")
    html = client.get("/customer/list/").get_data(as_text=True)
    assert "Manufacturing" in html and "Customer No." in html
    found = api.get("/api/v1/customer/?search=乙贸易").json
    assert found["count"] == 1


def test_cookie_api_write_needs_csrf(app, client, api):
    body = api_record(REGISTRY.entity("customer"), {}, _admin_id(app), _dicts(app))
    resp = client.post("/api/v1/customer/", json=body)  # session cookie, no token
    assert resp.status_code == 400
    assert _count(api, "customer") == 0


def test_add_form_starts_with_the_declared_defaults(app, client, api):
    html = client.get("/customer/add").get_data(as_text=True)
    me = _admin_id(app)  # owner: default current_user, pre-selected
    assert f'value="{me}" selected' in html or f'selected value="{me}"' in html
    assert 'name="customer_type"' not in html  # a pipeline field: new customers start as prospects
    owner_label = re.search(r'<label for="owner"[^>]*>(.*?)</label>', html, re.S)
    assert owner_label and "&#42;" in owner_label.group(1), owner_label  # required (though pre-filled)
    owner_box = re.search(r'<select[^>]*name="owner"[^>]*>', html).group(0)
    assert "required" not in owner_box, owner_box  # left empty, the default applies (see below)
    token = csrf_token(client, "/customer/add")
    resp = client.post("/customer/add", data={
        "name": "默认值客户", "industry": "retail", "contact_name": "钱七", "contact_phone": "13600000000",
        "owner": "", "customer_type": "", "csrf_token": token})
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith("/customer/list/")  # back to the list, not the home page
    got = api.get("/api/v1/customer/?search=默认值客户").json["result"][0]
    assert got["owner"] == _admin_id(app) and got["customer_type"] == "prospect"


def test_list_arguments_are_checked(api):
    assert api.get("/api/v1/customer/?q=(page_size:abc)").status_code == 400
    assert api.get("/api/v1/customer/?q=((((").status_code == 400
    assert api.get("/api/v1/customer/?q=(order_column:no_such_column)").status_code == 400
    assert api.get("/api/v1/customer/?q=(filters:!((col:name,opr:ct,value:x)))").status_code == 200


def test_show_page_reads_like_a_record_not_like_python(app, client, api):
    with app.app_context():
        sm = app.appbuilder.sm
        owner = sm.add_user("wangfang", "芳", "王", "wf@example.com", sm.find_role("admin"), "Pw-12345678")
    resp = api.post("/api/v1/customer/", json={
        "name": "展示页客户", "industry": "retail", "contact_name": "孙八", "contact_phone": "13500000000",
        "annual_revenue": 1234567.5, "owner": owner.id})
    html = client.get(f"/customer/show/{resp.json['id']}").get_data(as_text=True)
    assert "None" not in html.split("<body")[1]
    assert "王芳" in html  # family name first
    assert "1,234,567.50" in html
    assert resp.json["result"]["customer_no"] in html


def test_info_describes_fields_without_dumping_related_rows(app, api):
    info = api.get("/api/v1/customer/_info")
    assert info.status_code == 200
    fields = {f["name"]: f for f in info.json["fields"]}
    assert fields["industry"]["choices"][0] == {"code": "internet", "label": "IT/互联网"}
    assert fields["customer_no"]["readonly"] and fields["name"]["required"]
    assert "can_create" in info.json["permissions"]
    assert "owner" in fields and "choices" not in fields["owner"]  # no list of every user
    english = api.get("/api/v1/follow_up/_info", headers={"Accept-Language": "en"}).json
    assert {f["name"]: f for f in english["fields"]}["customer"]["entity"] == "customer"


@pytest.mark.parametrize("entity", ["customer", "follow_up", "demand", "feedback"])
def test_show_page_shows_each_field_once(app, client, api, entity):
    ent = REGISTRY.entity(entity)
    resp = api.post(f"/api/v1/{entity}/", json=api_record(ent, _refs(api, app, entity), _admin_id(app), _dicts(app)))
    assert resp.status_code == 201, resp.json
    html = client.get(f"/{entity}/show/{resp.json['id']}").get_data(as_text=True)
    record = html.split("crm-history")[0]  # the record's fields, not its history
    labels = re.findall(r"<th[^>]*>\s*([^<]+?)\s*</th>", record)
    number = next(f for f in REGISTRY.entity(entity).fields if f.type == "autonumber")
    assert number.label.zh in labels, labels
    repeated = {label for label in labels if labels.count(label) > 1}
    assert not repeated, repeated


def test_screen_paging_arguments_are_checked_and_capped(app, client, api):
    ent = REGISTRY.entity("contact")
    refs, uid, dicts = _refs(api, app, "contact"), _admin_id(app), _dicts(app)
    for _ in range(101):
        assert api.post("/api/v1/contact/", json=api_record(ent, refs, uid, dicts)).status_code == 201
    # a hand-edited page number: a clear message in the CRM's own page, not a server error
    bad = client.get("/contact/list/?page_ContactView=abc")
    assert bad.status_code == 400
    html = bad.get_data(as_text=True)
    assert "page_ContactView 须为非负整数" in html and 'class="navbar' in html
    assert client.get("/contact/list/?psize_ContactView=-5").status_code == 400
    # a page larger than the page-size menu offers (25 … 100) is cut to 100 rows
    rows = client.get("/contact/list/?psize_ContactView=100000").get_data(as_text=True)
    assert len(re.findall(r'href="/contact/show/\d+"', rows)) == 100


def test_refusals_keep_the_crms_layout_and_language(app, client):
    from support import login

    with app.app_context():
        sm = app.appbuilder.sm
        sm.add_user("rep_err", "芳", "王", "rep_err@example.com", sm.find_role("sales_rep"), "Pw-12345678")
    rep = login(app.test_client(), "rep_err", "Pw-12345678")
    refused = rep.get("/feedback/add")
    assert refused.status_code == 403
    html = refused.get_data(as_text=True)
    assert 'class="navbar' in html and "没有权限" in html and "Forbidden" not in html
    missing = client.get("/customer/show/987654")
    assert missing.status_code == 404 and "页面或记录不存在" in missing.get_data(as_text=True)
    assert client.get("/customer/show/987654", headers={"Accept": "application/json"}).json["message"]


def test_customers_filter_by_tag_on_the_list_and_on_rest(app, client, api):
    for name, tags in (("甲标签公司", ["key_account"]), ("乙标签公司", ["price_sensitive"]), ("丙标签公司", []),
                       ("丁标签公司", ["key_account", "price_sensitive"])):
        resp = api.post("/api/v1/customer/", json={"name": name, "customer_type": "prospect", "industry": "retail",
                                                   "contact_name": "王五", "contact_phone": "13800000000", "tags": tags})
        assert resp.status_code == 201, resp.json

    def names(html):
        return sorted(set(re.findall(r"[甲乙丙丁]标签公司", html.split("table-bordered", 1)[1])))

    listed = client.get("/customer/list/").get_data(as_text=True)
    assert '"tags": [' in listed  # offered among the list's filters
    has = names(client.get("/customer/list/?_flt_0_tags=key_account").get_data(as_text=True))
    assert has == ["丁标签公司", "甲标签公司"], has
    assert names(client.get("/customer/list/?_flt_1_tags=key_account").get_data(as_text=True)) == ["丙标签公司",
                                                                                                   "乙标签公司"]
    both = api.get("/api/v1/customer/?q=(filters:!((col:tags,opr:has,value:!(key_account,price_sensitive))))").json
    assert [r["name"] for r in both["result"]] == ["丁标签公司"] and both["count"] == 1  # a list: every code
    none = api.get("/api/v1/customer/?q=(filters:!((col:tags,opr:nhas,value:!(key_account,price_sensitive))))").json
    assert [r["name"] for r in none["result"]] == ["丙标签公司"]
