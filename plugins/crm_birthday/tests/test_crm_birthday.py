"""crm_birthday's own tests: an app with just this plugin (crm_meta.testing), on SQLite in tmp_path.

Run them with ``pytest plugins/crm_birthday/tests``.
"""
from __future__ import annotations

import logging
from datetime import date, timedelta

import pytest

from crm_birthday.plugin import next_birthday
from crm_meta.testing import api_client, csrf_token, login, make_app

CUSTOMER = {"name": "生日测试客户", "customer_type": "prospect", "industry": "finance", "contact_name": "赵六",
            "contact_phone": "13700000000"}


def in_days(n: int) -> str:
    """A birthday (in 1992, a leap year) that comes again in ``n`` days."""
    return (date.today() + timedelta(days=n)).replace(year=1992).isoformat()


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, plugins=["crm_birthday"])


@pytest.fixture
def api(app):
    return api_client(app)


@pytest.fixture
def customer(api):
    resp = api.post("/api/v1/customer/", json=CUSTOMER)
    assert resp.status_code == 201, resp.json
    return resp.json["id"]


@pytest.mark.parametrize("birthday, today, expected", [
    (date(1990, 5, 1), date(2026, 4, 30), date(2026, 5, 1)),
    (date(1990, 5, 1), date(2026, 5, 1), date(2026, 5, 1)),  # today counts
    (date(1990, 5, 1), date(2026, 5, 2), date(2027, 5, 1)),
    (date(1992, 2, 29), date(2026, 1, 10), date(2026, 2, 28)),  # no 29 February in 2026
    (date(1992, 2, 29), date(2028, 1, 10), date(2028, 2, 29)),
])
def test_next_birthday(birthday, today, expected):
    assert next_birthday(birthday, today) == expected


def test_the_reminder_field_is_on_contacts(app, api, customer):
    created = api.post("/api/v1/contact/", json={"customer": customer, "name": "张三"})
    assert created.status_code == 201 and created.json["result"]["birthday_reminder"] is False
    client = login(app.test_client(), app)
    assert 'name="birthday_reminder"' in client.get("/contact/add").get_data(as_text=True)
    assert "生日提醒" in client.get("/contact/list/").get_data(as_text=True)  # a list filter


def test_the_default_app_has_no_reminder_field(tmp_path):
    app = make_app(tmp_path)  # no plugin: the example changes nothing
    assert not app.extensions["crm"].registry.entity("contact").has_field("birthday_reminder")


def test_a_reminder_needs_a_birthday(api, customer):
    refused = api.post("/api/v1/contact/", json={"customer": customer, "name": "李四", "birthday_reminder": True})
    assert refused.status_code == 422 and refused.json["message"] == "开启生日提醒前请先填写生日"
    assert api.get("/api/v1/contact/").json["count"] == 0

    created = api.post("/api/v1/contact/", json={"customer": customer, "name": "李四", "birthday_reminder": True,
                                                 "birthday": in_days(3)})
    assert created.status_code == 201
    rid = created.json["id"]
    cleared = api.put(f"/api/v1/contact/{rid}", json={"birthday": None, "version": 1})
    assert cleared.status_code == 422 and "生日" in cleared.json["message"]
    got = api.get(f"/api/v1/contact/{rid}").json["result"]
    assert got["birthday"] == in_days(3) and got["version"] == 1
    both = api.put(f"/api/v1/contact/{rid}", json={"birthday": None, "birthday_reminder": False, "version": 1})
    assert both.status_code == 200


def test_a_reminder_needs_a_birthday_on_the_screen_too(app, api, customer):
    client = login(app.test_client(), app)
    client.get("/lang/en")
    token = csrf_token(client, "/contact/add")
    page = client.post("/contact/add", data={"customer": str(customer), "name": "王五", "birthday_reminder": "y",
                                             "owner": "1", "csrf_token": token})
    assert page.status_code == 200
    assert "Fill in the birthday before turning the birthday reminder on" in page.get_data(as_text=True)
    assert api.get("/api/v1/contact/").json["count"] == 0


def test_a_new_contact_with_a_birthday_is_logged(api, customer, caplog):
    with caplog.at_level(logging.INFO, logger="crm_birthday"):
        api.post("/api/v1/contact/", json={"customer": customer, "name": "赵六", "birthday": in_days(5)})
    assert "contact 赵六 (#1) added by user 1: next birthday in 5 day(s)" in caplog.text


def test_dashboard_command_and_job(app, api, customer, caplog):
    for name, days, reminder in (("近的", 2, True), ("远的", 20, True), ("不提醒", 1, False)):
        assert api.post("/api/v1/contact/", json={"customer": customer, "name": name, "birthday": in_days(days),
                                                  "birthday_reminder": reminder}).status_code == 201
    client = login(app.test_client(), app)
    html = client.get("/").get_data(as_text=True)
    assert 'data-widget="upcoming_birthdays"' in html
    assert html.index("近的") < html.index("远的") and "不提醒" not in html

    runner = app.test_cli_runner()
    out = runner.invoke(args=["crm", "birthdays", "--days", "10"]).output
    assert "近的" in out and "远的" not in out and "1 birthday(s) in the next 10 day(s)" in out

    with caplog.at_level(logging.INFO, logger="crm_birthday"):
        ran = runner.invoke(args=["crm", "jobs", "run"])
    assert ran.exit_code == 0 and "ran birthday_reminders (crm_birthday): ok — 1 reminder(s)" in ran.output
    assert "birthday reminder to admin: 近的" in caplog.text
    assert "skipped birthday_reminders" in runner.invoke(args=["crm", "jobs", "run"]).output  # daily
