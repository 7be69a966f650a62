"""Sensitive values masked on every path, revealed only by allowed roles (audited); key-field
changes by others wait for the owner's or an approver's decision. SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from support import csrf_token
from test_access_matrix import World


@pytest.fixture
def world(make_app) -> World:
    return World(make_app(CRM_DISABLED_PLUGINS="crm_lifecycle"))


def _raw(world, entity: str, rid: int, column: str):
    with world.app.app_context():
        b = world.app.extensions["crm"]
        return getattr(b.db.session.get(b.models.model(entity), rid), column)


def _set_phone(world, rid: int, phone: str) -> None:
    from crm_meta.services.records import Actor, RecordService

    with world.app.app_context():
        b = world.app.extensions["crm"]
        RecordService(b.db.session, b.models, "customer", Actor(None)).update(rid, {"contact_phone": phone})
        b.db.session.commit()


def test_phones_are_masked_on_every_read_and_write_path(world):
    rid = world.records[("sales_rep_me", "customer")]
    _set_phone(world, rid, "13812345678")
    rep_ui, rep = world.browser("sales_rep_me"), world.api("sales_rep_me")
    for html in (rep_ui.get("/customer/list/").get_data(as_text=True),
                 rep_ui.get(f"/customer/show/{rid}").get_data(as_text=True),
                 rep_ui.get(f"/customer/edit/{rid}").get_data(as_text=True)):
        assert "138****5678" in html and "13812345678" not in html
    assert rep.get(f"/api/v1/customer/{rid}").json["result"]["contact_phone"] == "138****5678"
    listed = rep.get("/api/v1/customer/").json["result"]
    assert all("****" in (r["contact_phone"] or "****") for r in listed)
    # write responses are masked like reads
    put = rep.put(f"/api/v1/customer/{rid}", json={"remark": "回访", "version": _raw(world, "customer", rid, "version")})
    assert put.status_code == 200 and put.json["result"]["contact_phone"] == "138****5678"
    # the masked value sent back unchanged (REST and form) keeps the real one
    body = {**put.json["result"]}
    body = {"contact_phone": body["contact_phone"], "email": body["email"], "remark": "再次回访",
            "version": body["version"]}
    assert rep.put(f"/api/v1/customer/{rid}", json=body).status_code == 200
    token = csrf_token(rep_ui, f"/customer/edit/{rid}")
    form = rep_ui.get(f"/customer/edit/{rid}").get_data(as_text=True)
    assert 'value="138****5678"' in form
    assert _raw(world, "customer", rid, "contact_phone") == "13812345678"
    created = rep.post("/api/v1/customer/", json={"name": "新客户", "customer_type": "prospect", "industry": "internet",
                                                   "contact_name": "赵六", "contact_phone": "13698765432"})
    assert created.status_code == 201, created.json
    assert created.json["result"]["contact_phone"] == "136****5432"
    assert token  # the edit form carries its CSRF token


def test_filtering_and_searching_cannot_probe_masked_values(world):
    rid = world.records[("sales_rep_me", "customer")]
    _set_phone(world, rid, "13812345678")
    rep, manager = world.api("sales_rep_me"), world.api("sales_manager_me")
    probe = "/api/v1/customer/?q=(filters:!((col:contact_phone,opr:ct,value:'1381')))"
    assert rep.get(probe).status_code == 400  # may not reveal: filter refused
    assert rep.get("/api/v1/customer/?q=(order_column:contact_phone,order_direction:asc)").status_code == 400
    assert manager.get(probe).status_code == 200  # may reveal: filtering allowed
    assert rep.get("/api/v1/customer/?search=1381").json["count"] == 0  # no partial match
    assert rep.get("/api/v1/customer/?search=13812345678").json["ids"] == [rid]  # the number you know
    ui = world.browser("sales_rep_me")
    html = ui.get("/customer/list/?q=1381").get_data(as_text=True)
    assert f"/customer/show/{rid}\"" not in html


def test_reveal_is_allowed_by_role_and_audited(world):
    rid = world.records[("sales_rep_me", "customer")]
    _set_phone(world, rid, "13812345678")
    rep, manager = world.api("sales_rep_me"), world.api("sales_manager_me")
    assert rep.post(f"/api/v1/customer/{rid}/reveal?field=contact_phone").status_code == 403
    resp = manager.post(f"/api/v1/customer/{rid}/reveal?field=contact_phone")
    assert resp.status_code == 200 and resp.json["value"] == "13812345678"
    far = world.records[("other_dept", "customer")]
    assert manager.post(f"/api/v1/customer/{far}/reveal?field=contact_phone").status_code == 404
    with world.app.app_context():
        b = world.app.extensions["crm"]
        audit = b.models.system["audit"]
        from sqlalchemy import select
        rows = b.db.session.execute(select(audit.c.username, audit.c.field, audit.c.record_id)
                                    .where(audit.c.action == "reveal")).all()
    assert [tuple(r) for r in rows] == [("sales_manager_me", "contact_phone", rid)]
    # on screen: the manager sees a reveal button, the rep does not
    assert "crm-reveal-btn" in world.browser("sales_manager_me").get(f"/customer/show/{rid}").get_data(as_text=True)
    assert "crm-reveal-btn" not in world.browser("sales_rep_me").get(f"/customer/show/{rid}").get_data(as_text=True)


def test_key_field_change_by_others_waits_for_the_owner(world):
    rid = world.records[("sales_rep_me", "customer")]
    _set_phone(world, rid, "13812345678")
    service, owner = world.api("service_me"), world.api("sales_rep_me")
    resp = service.put(f"/api/v1/customer/{rid}", json={"contact_phone": "13700000000", "remark": "客户来电",
                                                        "version": _raw(world, "customer", rid, "version"), "_reason": "客户来电更换号码"})
    assert resp.status_code == 202, resp.json
    (request_id,) = resp.json["pending"]
    assert _raw(world, "customer", rid, "contact_phone") == "13812345678"  # not changed yet
    assert _raw(world, "customer", rid, "remark") == "客户来电"  # the other field was saved
    # the requester cannot approve it; the owner sees it on the record and on the approvals list
    assert service.post(f"/api/v1/approvals/{request_id}/approve").status_code == 403
    html = world.browser("sales_rep_me").get(f"/customer/show/{rid}").get_data(as_text=True)
    assert "客户来电更换号码" in html and "137****0000" in html
    assert [r["id"] for r in owner.get("/api/v1/approvals/").json["result"]] == [request_id]
    told = [n for n in owner.get("/api/v1/notifications/").json["result"] if n["kind"] == "approval_request"]
    assert len(told) == 1 and "联系电话" in told[0]["text"] and "等待您审批" in told[0]["text"], told
    assert "13700000000" not in told[0]["text"] and told[0]["record_id"] == rid
    assert world.api("other_dept").get("/api/v1/approvals/").json["result"] == []  # not their record
    assert world.api("other_dept").post(f"/api/v1/approvals/{request_id}/approve").status_code == 404
    done = owner.post(f"/api/v1/approvals/{request_id}/approve", json={"comment": "已核实"})
    assert done.status_code == 200 and done.json["status"] == "approved"
    outcome = [n["text"] for n in service.get("/api/v1/notifications/").json["result"] if n["kind"] == "approval_decided"]
    assert len(outcome) == 1 and "已批准" in outcome[0], outcome
    assert _raw(world, "customer", rid, "contact_phone") == "13700000000"
    assert owner.post(f"/api/v1/approvals/{request_id}/approve").status_code == 422  # decided already
    # the owner's own key-field edit applies at once
    assert owner.put(f"/api/v1/customer/{rid}", json={"contact_name": "新联系人",
                                                      "version": _raw(world, "customer", rid, "version")}
                     ).status_code == 200
    assert _raw(world, "customer", rid, "contact_name") == "新联系人"


def test_conflicting_requests_the_second_approval_is_refused(world):
    rid = world.records[("sales_rep_me", "customer")]
    _set_phone(world, rid, "13812345678")
    service = world.api("service_me")
    version = _raw(world, "customer", rid, "version")
    first = service.put(f"/api/v1/customer/{rid}", json={"contact_phone": "13700000001", "version": version})
    second = service.put(f"/api/v1/customer/{rid}", json={"contact_phone": "13700000002", "version": version})
    assert first.status_code == second.status_code == 202
    manager = world.api("sales_manager_me")  # may approve the department's records
    assert manager.post(f"/api/v1/approvals/{first.json['pending'][0]}/approve").status_code == 200
    refused = manager.post(f"/api/v1/approvals/{second.json['pending'][0]}/approve")
    assert refused.status_code == 409 and "联系电话" in refused.json["message"]
    assert _raw(world, "customer", rid, "contact_phone") == "13700000001"
    assert manager.post(f"/api/v1/approvals/{second.json['pending'][0]}/reject").status_code == 200


def test_approvals_screen_lists_and_decides(world):
    rid = world.records[("sales_rep_me", "customer")]
    service = world.api("service_me")
    version = _raw(world, "customer", rid, "version")
    req = service.put(f"/api/v1/customer/{rid}", json={"contact_name": "钱七", "version": version}).json["pending"][0]
    ui = world.browser("sales_rep_me")
    page = ui.get("/crm/approvals/").get_data(as_text=True)
    assert "钱七" in page
    name = _raw(world, "customer", rid, "name")
    assert f"{name} (#{rid})" in page  # the record by its name, not only its number
    token = csrf_token(ui, "/crm/approvals/")
    resp = ui.post(f"/crm/approvals/{req}/decide", data={"decision": "reject", "csrf_token": token})
    assert resp.status_code == 302
    assert _raw(world, "customer", rid, "contact_name") != "钱七"
    assert "钱七" not in ui.get("/crm/approvals/").get_data(as_text=True)


def test_export_shows_what_the_user_sees_and_is_audited(world):
    import io

    from openpyxl import load_workbook

    rid = world.records[("sales_rep_me", "customer")]
    _set_phone(world, rid, "13812345678")
    marketing = world.browser("marketing_me")  # customer: read + export, scope all, revenue hidden
    resp = marketing.get("/customer/export/?format=xlsx")
    assert resp.status_code == 200 and "attachment" in resp.headers["Content-Disposition"]
    sheet = load_workbook(io.BytesIO(resp.data)).active
    rows = list(sheet.values)
    header, body = rows[0], rows[1:]
    assert "客户名称" in header and "年营业额（元）" not in header  # hidden for marketing
    phone = header.index("联系电话")
    mine = next(r for r in body if r[0] == rid)
    assert mine[phone] == "138****5678"
    assert "13812345678" not in resp.get_data(as_text=False).decode("latin-1")
    assert len(body) == int(resp.headers["X-Export-Rows"]) >= 4
    # the export is on the audit trail with the number of rows
    with world.app.app_context():
        from sqlalchemy import select
        b = world.app.extensions["crm"]
        audit = b.models.system["audit"]
        row = b.db.session.execute(select(audit.c.username, audit.c.quantity, audit.c.entity)
                                   .where(audit.c.action == "export")).one()
    assert tuple(row) == ("marketing_me", len(body), "customer")
    csv = marketing.get("/customer/export/?format=csv")
    assert csv.headers["Content-Type"] == "text/csv; charset=utf-8"  # one charset, as clients parse it
    assert "138****5678" in csv.get_data(as_text=True) and "13812345678" not in csv.get_data(as_text=True)
    # a sales rep may not export customers at all
    assert world.browser("sales_rep_me").get("/customer/export/?format=csv").status_code == 403
    # filters that would probe masked values are refused here too
    probe = "/api/v1/customer/export?q=(filters:!((col:contact_phone,opr:ct,value:'1381')))"
    assert world.api("marketing_me").get(probe).status_code == 400


def test_list_offers_export_with_its_filters_only_to_exporters(world):
    html = world.browser("marketing_me").get("/customer/list/?q=abc").get_data(as_text=True)
    assert 'href="/customer/export/?format=xlsx&amp;q=abc"' in html
    assert "crm-export" not in world.browser("sales_rep_me").get("/customer/list/").get_data(as_text=True)
