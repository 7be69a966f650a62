"""Start-up: the dictionary check, refusing bad dictionaries, additive migration, OpenAPI, menus."""
from __future__ import annotations

import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ADMIN_PASSWORD, login

ROOT = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask", "--app", "app", "crm"]


def _copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", target)
    return target


def _run(args, env_extra, tmp_path):
    env = {**os.environ, **env_extra, "CRM_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"}
    return subprocess.run(FLASK + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_crm_check_passes_on_the_default_dictionary(tmp_path):
    result = _run(["check"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^ok: \d+ entities", result.stdout)


def test_crm_check_reports_every_error_with_its_place(tmp_path):
    schemas = _copy_schemas(tmp_path)
    text = (schemas / "customer.yaml").read_text()
    (schemas / "customer.yaml").write_text(text.replace("type: phone", "type: phnoe"))
    contact = (schemas / "contact.yaml").read_text()
    (schemas / "contact.yaml").write_text(contact.replace("entity: customer", "entity: custmer"))
    result = _run(["check"], {"CRM_SCHEMA_PATH": str(schemas)}, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    phone_line = next(i for i, line in enumerate(text.splitlines(), 1) if "type: phone" in line)
    assert f"customer.yaml:{phone_line}:" in result.stderr
    assert "'phnoe' is not one of" in result.stderr
    assert "contact.yaml:" in result.stderr and "unknown entity 'custmer'" in result.stderr


def test_app_refuses_to_start_on_an_invalid_dictionary(tmp_path, capsys):
    from app import create_app

    schemas = _copy_schemas(tmp_path)
    (schemas / "broken.yaml").write_text("entities:\n  thing:\n    label: x\n    fields: {a: {type: strng, label: a}}\n")
    with pytest.raises(SystemExit) as exc:
        create_app({"CRM_SCHEMA_PATH": str(schemas), "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db",
                    "INSTANCE_PATH": str(tmp_path / "i"), "SECRET_KEY": "k"})
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "broken.yaml:4:" in err and "'strng' is not one of" in err


def test_a_new_field_in_yaml_becomes_a_column_on_restart_and_a_removed_one_is_refused(make_app, tmp_path, api):
    schemas = _copy_schemas(tmp_path)
    app = make_app(schemas)
    client = app.test_client()
    from support import ADMIN_PASSWORD, Api

    def api_for(a):
        c = a.test_client()
        tok = c.post("/api/v1/security/login", json={"username": "admin", "password": ADMIN_PASSWORD,
                                                     "provider": "db"}).json["access_token"]
        return Api(c, tok)

    first = api_for(app)
    created = first.post("/api/v1/contact/", json={"name": "x"})
    assert created.status_code == 422  # customer is required
    cust = first.post("/api/v1/customer/", json={
        "name": "保留的数据", "customer_type": "prospect", "industry": "finance", "contact_name": "赵六",
        "contact_phone": "13700000000"})
    assert cust.status_code == 201

    text = (schemas / "customer.yaml").read_text()
    text = text.replace("      remark:\n", "      wechat_id:\n        type: string\n        length: 40\n"
                                          "        label: {zh: 微信号, en: WeChat ID}\n      remark:\n")
    text = text.replace("fields: [owner, remark]", "fields: [owner, wechat_id, remark]")
    (schemas / "customer.yaml").write_text(text)
    second = make_app(schemas)
    api2 = api_for(second)
    got = api2.get(f"/api/v1/customer/{cust.json['id']}").json["result"]
    assert got["name"] == "保留的数据" and got["wechat_id"] is None
    put = api2.put(f"/api/v1/customer/{cust.json['id']}", json={"wechat_id": "wx_zhao", "version": 1})
    assert put.status_code == 200 and put.json["result"]["wechat_id"] == "wx_zhao"
    assert "wechat_id" in api2.get("/api/v1/_openapi").get_data(as_text=True)
    page = login(second.test_client()).get("/customer/add").get_data(as_text=True)
    assert "微信号" in page

    (schemas / "customer.yaml").write_text(text.replace("      wechat_id:\n        type: string\n        length: 40\n"
                                                        "        label: {zh: 微信号, en: WeChat ID}\n", "")
                                           .replace("owner, wechat_id, remark", "owner, remark"))
    with pytest.raises(SystemExit):
        make_app(schemas)
    api3 = api_for(second)
    assert api3.get(f"/api/v1/customer/{cust.json['id']}").json["result"]["wechat_id"] == "wx_zhao"


def test_openapi_describes_every_entity_and_field(app, api):
    spec = api.get("/api/v1/_openapi").json
    registry = app.extensions["crm"].registry
    for entity in registry.entities:
        assert f"/api/v1/{entity.name}/" in spec["paths"], entity.name
        schema_name = "".join(p.capitalize() for p in entity.name.split("_")) + "Api.get"
        props = spec["components"]["schemas"][schema_name]["properties"]
        for f in entity.fields:
            assert f.name in props, f"{entity.name}.{f.name}"
    post = spec["components"]["schemas"]["CustomerApi.post"]
    assert {"name", "industry", "contact_phone"} <= set(post["required"])


def test_menus_are_grouped_and_bilingual(app, client):
    html = client.get("/customer/list/").get_data(as_text=True)
    assert "客户管理" in html and "销售管理" in html and "客户服务" in html
    client.get("/lang/en")
    html = client.get("/customer/list/").get_data(as_text=True)
    assert "Customers" in html and "Sales" in html and "客户管理" not in html


def test_api_calls_get_no_session_cookie_and_the_language_still_sticks(app, api):
    """The API answers without a session cookie (a script's calls stay stateless); the screens'
    language is still Chinese by default and follows the user's choice for the rest of the session."""
    login_resp = app.test_client().post("/api/v1/security/login", json={
        "username": "admin", "password": ADMIN_PASSWORD, "provider": "db"})
    assert login_resp.status_code == 200 and "Set-Cookie" not in login_resp.headers
    listed = api.get("/api/v1/customer/")
    assert listed.status_code == 200 and "Set-Cookie" not in listed.headers
    assert api.get("/api/v1/customer/?_l_=en").status_code == 200

    browser = login(app.test_client())
    assert "客户管理" in browser.get("/customer/list/").get_data(as_text=True)
    browser.get("/lang/en")
    assert "Customers" in browser.get("/customer/list/").get_data(as_text=True)
    assert "Customers" in browser.get("/customer/list/").get_data(as_text=True)  # kept, not reset to the default


def test_permissions_sync_only_when_something_changed(app):
    from crm_meta.web.permissions import sync_permissions

    with app.app_context():
        b = app.extensions["crm"]
        assert sync_permissions(b.db.session, app.appbuilder, "admin", b.models.system["state"],
                                b.registry) is False
        admin = app.appbuilder.sm.find_role("admin")
        names = {(p.permission.name, p.view_menu.name) for p in admin.permissions}
    for entity in app.extensions["crm"].registry.entities:
        for perm in ("can_read", "can_create", "can_update", "can_delete"):
            assert (perm, entity.name) in names


def test_security_api_starts_with_the_pinned_marshmallow(make_app):
    """FAB 5.3 + marshmallow 4 / marshmallow-sqlalchemy 1.6 fails here with KeyError 'permission_id'."""
    app = make_app(FAB_ADD_SECURITY_API=True)
    assert any(r.rule.startswith("/api/v1/security/roles") for r in app.url_map.iter_rules())


def test_second_start_reuses_the_database(make_app, api):
    from crm_meta.services.schema_sync import sync_schema

    app = make_app()
    with app.app_context():
        b = app.extensions["crm"]
        assert sync_schema(b.db.engine, b.models) == []  # digest unchanged: no plan, no migration


def test_pages_send_security_headers(client):
    resp = client.get("/customer/list/")
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
