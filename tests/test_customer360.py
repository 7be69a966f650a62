"""Customer 360° (/crm/customer360/<id>, GET /api/v1/customer/<id>/360): one customer with its contacts,
follow-ups, demands, feedback tickets and opportunities, each list under the access policy. Reuses the
authorization matrix's World (users of every role, records of every entity). SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from test_access_matrix import World

from crm_meta.services.records import Actor, RecordService

RELATED = ("contact", "follow_up", "demand", "feedback", "opportunity")


@pytest.fixture
def world(make_app) -> World:
    return World(make_app(CRM_DISABLED_PLUGINS="crm_lifecycle"))


def _system(world, entity: str, data: dict, record_id: int | None = None) -> int:
    with world.app.app_context():
        b = world.app.extensions["crm"]
        svc = RecordService(b.db.session, b.models, entity, Actor(None))
        obj = svc.update(record_id, data) if record_id else svc.create(data)
        b.db.session.commit()
        return obj.id


def _sections(resp) -> dict:
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    return {s["key"]: s for s in resp.json["result"]["sections"]}


def _related_body(world, entity: str, customer_id: int, owner: str) -> dict:
    from factories import api_record

    from crm_meta.services.dictionaries import Dictionaries

    with world.app.app_context():
        b = world.app.extensions["crm"]
        dicts = Dictionaries.load(b.db.session, b.models.system["dict_item"])
        refs = {"customer": customer_id}
        return api_record(world.registry.entity(entity), refs, world.user_ids[owner], dicts)


def test_page_and_rest_show_every_related_list(world):
    cid = world.records[("admin_me", "customer")]  # every World record of the other entities points here
    owners = len({k[0] for k in world.records})
    sections = _sections(world.api("admin_me").get(f"/api/v1/customer/{cid}/360"))
    for entity in RELATED:
        assert sections[entity]["count"] == owners, entity
        ids = {r["id"] for r in sections[entity]["records"]}
        assert ids == {rid for (o, e), rid in world.records.items() if e == entity}
    opp = sections["opportunity"]["records"][0]
    stage = world.registry.dictionary("opportunity_stage").item(opp["stage"])
    assert opp["labels"]["stage"] == stage.label.zh  # stages come with their labels
    assert "customer" in opp and opp["customer"] == cid
    ui = world.browser("admin_me")
    html = ui.get(f"/crm/customer360/{cid}").get_data(as_text=True)
    for entity in RELATED:
        assert f'id="crm-360-{entity}"' in html and f'/{entity}/show/{world.records[("other_dept", entity)]}"' in html
    assert stage.label.zh in html
    from pathlib import Path

    import crm_meta.web

    template = Path(crm_meta.web.__file__).parent / "templates" / "crm" / "customer360.html"
    assert "<script" not in template.read_text(encoding="utf-8")  # no script at all, nothing from the internet
    assert "http://" not in template.read_text(encoding="utf-8") and "https://" not in template.read_text(encoding="utf-8")
    show = ui.get(f"/customer/show/{cid}").get_data(as_text=True)
    assert f'href="/crm/customer360/{cid}"' in show
    assert "/crm/customer360/" not in ui.get(f"/contact/show/{world.records[('admin_me', 'contact')]}").get_data(
        as_text=True)
    ui.get("/lang/en")
    english = ui.get(f"/crm/customer360/{cid}").get_data(as_text=True)
    assert "Customer 360°" in english and "Status history" in english and stage.label.en in english


def test_a_sales_rep_sees_their_customer_and_not_another(world):
    mine, theirs = world.records[("sales_rep_me", "customer")], world.records[("other_dept", "customer")]
    rep, ui = world.api("sales_rep_me"), world.browser("sales_rep_me")
    assert rep.get(f"/api/v1/customer/{mine}/360").status_code == 200
    assert ui.get(f"/crm/customer360/{mine}").status_code == 200
    assert rep.get(f"/api/v1/customer/{theirs}/360").status_code == 404
    assert ui.get(f"/crm/customer360/{theirs}").status_code == 404
    assert rep.get("/api/v1/customer/999999/360").status_code == 404
    anonymous = world.app.test_client()
    assert anonymous.get(f"/api/v1/customer/{mine}/360").status_code == 401


def test_related_records_outside_the_scope_are_not_listed(world):
    mine = world.records[("sales_rep_me", "customer")]
    rep = world.api("sales_rep_me")
    own = rep.post("/api/v1/contact/", json={"name": "自己的联系人", "customer": mine, "phone": "13900002222"})
    assert own.status_code == 201, own.json
    # a colleague of another department has a contact and an opportunity at the same customer
    other_contact = _system(world, "contact", {**_related_body(world, "contact", mine, "other_dept"),
                                               "name": "别人的联系人"})
    other_opp = _system(world, "opportunity", _related_body(world, "opportunity", mine, "other_dept"))
    sections = _sections(rep.get(f"/api/v1/customer/{mine}/360"))
    assert [r["id"] for r in sections["contact"]["records"]] == [own.json["id"]]
    assert sections["contact"]["count"] == 1 and sections["opportunity"]["count"] == 0
    html = world.browser("sales_rep_me").get(f"/crm/customer360/{mine}").get_data(as_text=True)
    assert "自己的联系人" in html and "别人的联系人" not in html
    admin = _sections(world.api("admin_me").get(f"/api/v1/customer/{mine}/360"))
    assert {r["id"] for r in admin["contact"]["records"]} == {own.json["id"], other_contact}
    assert [r["id"] for r in admin["opportunity"]["records"]] == [other_opp]


def test_marketing_sees_no_contacts_and_no_hidden_fields(world):
    cid = world.records[("admin_me", "customer")]
    marketing = world.api("marketing_me")
    result = marketing.get(f"/api/v1/customer/{cid}/360")
    sections = _sections(result)
    assert "contact" not in sections and "follow_up" not in sections and "feedback" not in sections
    assert {"demand", "opportunity"} <= set(sections)
    customer = result.json["result"]["customer"]
    assert "annual_revenue" not in customer and "****" in customer["contact_name"]  # hidden / masked for marketing
    assert all("amount" not in r for r in sections["opportunity"]["records"])
    html = world.browser("marketing_me").get(f"/crm/customer360/{cid}").get_data(as_text=True)
    assert 'id="crm-360-contact"' not in html and 'id="crm-360-opportunity"' in html
    label = world.registry.entity("customer").field("annual_revenue").label.zh
    assert label not in html
    amount = world.registry.entity("opportunity").field("amount").label.zh
    assert amount not in html


def test_a_masked_phone_stays_masked(world):
    mine = world.records[("sales_rep_me", "customer")]
    _system(world, "customer", {"contact_phone": "13812345678"}, mine)
    rep = world.api("sales_rep_me")
    contact = rep.post("/api/v1/contact/", json={"name": "赵六", "customer": mine, "phone": "13698765432"})
    assert contact.status_code == 201
    for who in ("sales_rep_me", "admin_me"):  # masked for everyone until revealed on the record's page
        result = world.api(who).get(f"/api/v1/customer/{mine}/360").json["result"]
        assert result["customer"]["contact_phone"] == "138****5678"
        phones = {r["phone"] for s in result["sections"] if s["entity"] == "contact" for r in s["records"]}
        assert "136****5432" in phones and "13698765432" not in phones
        html = world.browser(who).get(f"/crm/customer360/{mine}").get_data(as_text=True)
        assert "138****5678" in html and "13812345678" not in html
        assert "136****5432" in html and "13698765432" not in html


def test_status_history_cadence_and_sla_clocks_show_when_declared(world):
    from crm_meta.services import pipelines

    if not hasattr(pipelines, "record"):
        pytest.skip("status history is not there yet")
    cid = world.records[("admin_me", "customer")]
    registry = world.registry
    with world.app.app_context():
        b = world.app.extensions["crm"]
        session = b.db.session
        pipelines.record(session, b.models, "customer", cid, "customer_type", "prospect", "intent",
                         Actor(world.user_ids["admin_me"], "zh", "admin_me"), "客户有意向")
        customer, feedback = registry.entity("customer"), registry.entity("feedback")
        if customer.has_field("next_follow_up_at"):
            table = b.models.model("customer").__table__
            session.execute(table.update().where(table.c.id == cid).values(
                next_follow_up_at=datetime.now() - timedelta(days=2)))
        if feedback.has_field("resolve_due_at") and feedback.has_field("sla_breached"):
            table = b.models.model("feedback").__table__
            fid = world.records[("admin_me", "feedback")]
            values = {"resolve_due_at": datetime.now() - timedelta(hours=3), "sla_breached": True}
            if feedback.has_field("resolved_at"):
                values["resolved_at"] = None
            session.execute(table.update().where(table.c.id == fid).values(**values))
        session.commit()
    result = world.api("admin_me").get(f"/api/v1/customer/{cid}/360").json["result"]
    moves = [h for h in result["status_history"] if h["entity"] == "customer"]
    assert moves and moves[0]["to_code"] == "intent" and moves[0]["username"] == "admin_me"
    assert moves[0]["to_label"] == registry.dictionary("customer_type").item("intent").label.zh
    html = world.browser("admin_me").get(f"/crm/customer360/{cid}").get_data(as_text=True)
    assert "客户有意向" in html and moves[0]["to_label"] in html
    if registry.entity("customer").has_field("next_follow_up_at"):
        assert result["next_follow_up_at"] is not None and "已超时" in html
    if registry.entity("feedback").has_field("sla_breached"):
        fb = next(s for s in result["sections"] if s["entity"] == "feedback")
        assert fb["breached"] == 1
        assert "crm-360-breached" in html
    # a user who may not read feedback sees no feedback rows and no SLA counts
    marketing = world.api("marketing_me").get(f"/api/v1/customer/{cid}/360").json["result"]
    assert all(s["entity"] != "feedback" for s in marketing["sections"])
