"""The audit trail: every create/update/delete on screens and REST is recorded with who, where and
which request, field by field; values are shown masked to viewers who may not reveal them; the
table refuses UPDATE and DELETE on SQLite and PostgreSQL."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from support import csrf_token, login
from factories import form_record

from crm_meta.schema import load_registry

REGISTRY = load_registry(["schemas"])
PHONE, NEW_PHONE = "13812345678", "13998765432"
USER_PASSWORD = "Viewer2026pass"


def _rows(app, **where):
    with app.app_context():
        b = app.extensions["crm"]
        t = b.models.system["audit"]
        stmt = select(t).order_by(t.c.id)
        for key, value in where.items():
            stmt = stmt.where(t.c[key] == value)
        rows = [dict(r) for r in b.db.session.execute(stmt).mappings()]
        b.db.session.remove()
        return rows


def _by_field(rows):
    return {r["field"]: r for r in rows}


def _admin_id(app) -> int:
    with app.app_context():
        return app.appbuilder.sm.find_user(username="admin").id


def _dicts(app):
    from crm_meta.services.dictionaries import Dictionaries

    with app.app_context():
        b = app.extensions["crm"]
        return Dictionaries.load(b.db.session, b.models.system["dict_item"])


def _customer_body(name="审计测试有限公司", phone=PHONE):
    return {"name": name, "customer_type": "prospect", "industry": "retail",
            "contact_name": "王五", "contact_phone": phone}


def _user(app, username: str, role: str):
    with app.app_context():
        sm = app.appbuilder.sm
        found = sm.find_role(role) or sm.add_role(role)
        user = sm.add_user(username, "测", "试", f"{username}@crm.invalid", found, USER_PASSWORD)
        assert user, f"could not create {username}"
        return user.id


def test_screen_changes_are_audited_field_by_field_with_user_ip_and_request(app, client):
    ent = REGISTRY.entity("customer")
    form = {**form_record(ent, {}, _admin_id(app), _dicts(app)), "contact_phone": PHONE, "name": "屏幕审计有限公司"}
    resp = client.post("/customer/add", data={**form, "csrf_token": csrf_token(client, "/customer/add")},
                       headers={"X-Request-Id": "ui-create-0001"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-1500:]
    assert resp.headers["X-Request-Id"] == "ui-create-0001"

    created = _rows(app, action="create", entity="customer")
    assert created, "no audit rows for a customer created on the screen"
    rid = created[0]["record_id"]
    fields = _by_field(created)
    assert fields["name"]["new_value"] == "屏幕审计有限公司" and fields["name"]["old_value"] is None
    assert fields["contact_phone"]["new_value"] == PHONE  # the audit store keeps raw values
    assert re.fullmatch(r"C\d{11,}", fields["customer_no"]["new_value"])  # the assigned number too
    for r in created:
        assert (r["username"], r["user_id"], r["ip"], r["request_id"]) == \
            ("admin", _admin_id(app), "127.0.0.1", "ui-create-0001")

    token = csrf_token(client, f"/customer/edit/{rid}")
    resp = client.post(f"/customer/edit/{rid}", data={**form, "name": "屏幕审计（改名）有限公司", "version": "1",
                                                     "csrf_token": token})
    assert resp.status_code == 302
    updated = _rows(app, action="update", record_id=rid)
    assert [(r["field"], r["old_value"], r["new_value"]) for r in updated] == [
        ("name", "屏幕审计有限公司", "屏幕审计（改名）有限公司")]  # only what changed
    assert updated[0]["request_id"] and updated[0]["request_id"] != "ui-create-0001"  # a fresh id per request
    assert re.fullmatch(r"[0-9a-f]{32}", updated[0]["request_id"])

    token = csrf_token(client, "/customer/list/")
    assert client.post(f"/customer/delete/{rid}", data={"csrf_token": token, "version": "2"}).status_code == 302
    deleted = _rows(app, action="delete", record_id=rid)
    assert len(deleted) == 1 and deleted[0]["entity"] == "customer" and deleted[0]["username"] == "admin"


def test_rest_changes_are_audited(app, api):
    resp = api.post("/api/v1/customer/", json=_customer_body(), headers={"X-Request-Id": "rest-create-1"})
    assert resp.status_code == 201, resp.json
    rid = resp.json["id"]
    created = _by_field(_rows(app, action="create", record_id=rid))
    assert created["contact_phone"]["new_value"] == PHONE
    assert created["name"]["request_id"] == "rest-create-1" and created["name"]["username"] == "admin"

    resp = api.put(f"/api/v1/customer/{rid}", json={"contact_phone": NEW_PHONE, "industry": "finance", "version": 1})
    assert resp.status_code == 200, resp.json
    updated = _by_field(_rows(app, action="update", record_id=rid))
    assert (updated["contact_phone"]["old_value"], updated["contact_phone"]["new_value"]) == (PHONE, NEW_PHONE)
    assert (updated["industry"]["old_value"], updated["industry"]["new_value"]) == ("retail", "finance")
    assert updated["industry"]["ip"] == "127.0.0.1"

    # A request id that is not a sane token is replaced, not stored.
    bad = api.delete(f"/api/v1/customer/{rid}", headers={"If-Match": '"2"', "X-Request-Id": "x" * 200 + "<script>"})
    assert bad.status_code == 200, bad.get_data(as_text=True)
    deleted = _rows(app, action="delete", record_id=rid)
    assert len(deleted) == 1 and re.fullmatch(r"[0-9a-f]{32}", deleted[0]["request_id"])
    assert bad.headers["X-Request-Id"] == deleted[0]["request_id"]


def test_a_refused_change_leaves_no_audit_row(app, api):
    resp = api.post("/api/v1/customer/", json={**_customer_body(), "contact_phone": "not a phone"})
    assert resp.status_code in (400, 422)
    assert _rows(app, action="create") == []


def test_history_and_audit_screen_mask_values_also_for_viewers_who_may_reveal(app, client, api):
    rid = api.post("/api/v1/customer/", json=_customer_body()).json["id"]
    assert api.put(f"/api/v1/customer/{rid}", json={"contact_phone": NEW_PHONE, "version": 1}).status_code == 200

    # the admin may reveal the phone on the record's page (audited), not read it in the history
    admin = client.get(f"/crm/history/customer/{rid}")
    assert admin.status_code == 200
    phone = [e for e in admin.json["entries"] if e["field"] == "contact_phone" and e["action"] == "update"]
    assert (phone[0]["old_value"], phone[0]["new_value"]) == ("138****5678", "139****5432")
    assert phone[0]["field_label"] == REGISTRY.entity("customer").field("contact_phone").label.zh
    for url in (f"/customer/show/{rid}", f"/crm/audit/?entity=customer&record_id={rid}"):
        html = client.get(url).get_data(as_text=True)
        assert "139****5432" in html and PHONE not in html and NEW_PHONE not in html, url
    assert api.post(f"/api/v1/customer/{rid}/reveal?field=contact_phone").json["value"] == NEW_PHONE
    assert admin.json["entries"][0]["action"] == "update"  # newest first

    _user(app, "auditor1", "auditor")  # reads everything and the audit trail, may reveal nothing
    viewer = login(app.test_client(), "auditor1", USER_PASSWORD)
    hist = viewer.get(f"/crm/history/customer/{rid}")
    assert hist.status_code == 200
    phone = [e for e in hist.json["entries"] if e["field"] == "contact_phone" and e["action"] == "update"]
    assert (phone[0]["old_value"], phone[0]["new_value"]) == ("138****5678", "139****5432")
    assert phone[0]["masked"] is True
    names = [e for e in hist.json["entries"] if e["field"] == "name"]
    assert names[0]["new_value"] == "审计测试有限公司"  # fields that are not sensitive stay readable
    assert PHONE not in hist.get_data(as_text=True) and NEW_PHONE not in hist.get_data(as_text=True)

    screen = viewer.get(f"/crm/audit/?entity=customer&record_id={rid}")
    assert screen.status_code == 200
    html = screen.get_data(as_text=True)
    assert "138****5678" in html and "139****5432" in html
    assert PHONE not in html and NEW_PHONE not in html


def test_history_needs_read_on_the_entity(app, api):
    rid = api.post("/api/v1/customer/", json=_customer_body()).json["id"]
    assert app.test_client().get(f"/crm/history/customer/{rid}").status_code in (302, 401)  # not signed in
    _user(app, "nobody1", "nobody")
    nobody = login(app.test_client(), "nobody1", USER_PASSWORD)
    assert nobody.get(f"/crm/history/customer/{rid}").status_code == 403
    assert nobody.get("/crm/audit/").status_code == 403
    assert nobody.get("/crm/history/no_such_entity/1").status_code == 404
    hist = api.get(f"/crm/history/customer/{rid}")  # a REST client with a bearer token
    assert hist.status_code == 200 and hist.json["entries"]


def test_audit_screen_searches_and_pages(app, client, api):
    ids = [api.post("/api/v1/customer/", json=_customer_body(f"检索{i}有限公司")).json["id"] for i in range(3)]
    html = client.get(f"/crm/audit/?action=create&entity=customer&record_id={ids[1]}").get_data(as_text=True)
    assert "检索1有限公司" in html and "检索0有限公司" not in html and "检索2有限公司" not in html
    html = client.get("/crm/audit/?user=admin&action=login").get_data(as_text=True)
    assert 'data-action="login"' in html and 'data-action="create"' not in html
    html = client.get("/crm/audit/?user=somebody_else").get_data(as_text=True)
    assert "crm-audit-row" not in html
    html = client.get("/crm/audit/?date_from=2000-01-01&date_to=2000-01-02").get_data(as_text=True)
    assert "crm-audit-row" not in html
    html = client.get("/crm/audit/?record_id=abc").get_data(as_text=True)
    assert "crm-audit-error" in html
    client.get("/lang/en")
    html = client.get("/crm/audit/").get_data(as_text=True)
    assert "Audit trail" in html and "Time (UTC)" in html
    with app.app_context():
        from crm_meta.services import audit

        b = app.extensions["crm"]
        page = audit.search(b.db.session, b.models.system, entity="customer", action="create", page=1, page_size=5)
        assert page["count"] == sum(len(_rows(app, action="create", record_id=i)) for i in ids)
        assert len(page["rows"]) == 5 and page["rows"][0]["id"] > page["rows"][-1]["id"]


def test_audit_table_is_append_only(app, api):
    """UPDATE and DELETE on crm_audit fail through the app's own session, admins or not."""
    api.post("/api/v1/customer/", json=_customer_body())
    before = _rows(app)
    assert before
    with app.app_context():
        session = app.extensions["crm"].db.session
        for sql in ("UPDATE crm_audit SET new_value = 'forged'", "DELETE FROM crm_audit",
                    f"DELETE FROM crm_audit WHERE id = {before[0]['id']}"):
            with pytest.raises(DBAPIError, match="append-only"):
                session.execute(text(sql))
            session.rollback()
        session.remove()
    assert _rows(app) == before

    # No route writes the trail: the audit screen answers GET only and has no edit or delete pages.
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/crm/audit")]
    assert rules and all(r.methods <= {"GET", "HEAD", "OPTIONS"} for r in rules)
    assert not [r for r in app.url_map.iter_rules() if "audit" in r.rule and re.search(r"edit|delete|add", r.rule)]


def test_triggers_come_back_after_a_restart(make_app):
    app = make_app()
    with app.app_context():
        engine = app.extensions["crm"].db.engine
        from crm_meta.services import audit

        assert audit.install_append_only(engine) is False  # already there: nothing to do
        session = app.extensions["crm"].db.session  # a row, so that a row trigger has something to refuse
        audit.log_event(session, app.extensions["crm"].models.system, None, "import", entity="customer", count=3)
        session.commit()
        session.remove()
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER crm_audit_no_delete")
            else:
                conn.exec_driver_sql("DROP TRIGGER crm_audit_append_only ON crm_audit")
    again = make_app()
    with again.app_context():
        session = again.extensions["crm"].db.session
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text("DELETE FROM crm_audit"))
        session.rollback()
        session.remove()


def test_history_on_the_record_page_reads_like_the_record(app, client, api):
    """Dictionary labels, people's names, referenced records' titles and 是/否 — not codes and ids."""
    rid = api.post("/api/v1/customer/", json=_customer_body("历史可读有限公司")).json["id"]
    other = _user(app, "hist_owner", "admin")
    assert api.put(f"/api/v1/customer/{rid}", json={"industry": "manufacturing", "owner": other,
                                                     "version": 1}).status_code == 200
    opp = api.post("/api/v1/opportunity/", json={"name": "历史商机", "customer": rid, "amount": 1000})
    assert opp.status_code == 201, opp.json
    second = api.post("/api/v1/customer/", json=_customer_body("另一家历史有限公司", "13700001111")).json["id"]
    assert api.put(f"/api/v1/opportunity/{opp.json['id']}", json={"customer": second, "version": 1}).status_code == 200

    def history_cells(url):
        html = client.get(url).get_data(as_text=True)
        table = html.split("crm-history", 1)[1]
        return [(o.strip(), n.strip()) for o, n in re.findall(
            r'<td class="crm-old">(.*?)</td><td class="crm-new">(.*?)</td>', table, re.S)]

    cells = history_cells(f"/customer/show/{rid}")
    assert ("零售业", "制造业") in cells, cells
    assert ("系统管理员 (admin)", "试测 (hist_owner)") in cells, cells
    assert not any(c in ("retail", "manufacturing", str(other)) for pair in cells for c in pair), cells
    cells = history_cells(f"/opportunity/show/{opp.json['id']}")
    assert (f"历史可读有限公司 (#{rid})", f"另一家历史有限公司 (#{second})") in cells, cells
    assert ("", "1,000.00") in cells, cells  # the amount as the record shows it
    audit_screen = client.get(f"/crm/audit/?entity=customer&record_id={rid}").get_data(as_text=True)
    assert "制造业" in audit_screen and ">manufacturing<" not in audit_screen
