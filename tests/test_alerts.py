"""Alert rules from the `alert_rule` dictionary: raised after the threshold and not before, once per
burst, shown to admins on the dashboard and the alerts list, acknowledged with a CSRF-protected POST."""
from __future__ import annotations

import re

from sqlalchemy import select
from support import csrf_token, login

from crm_meta.services.records import Actor

PASSWORD = "Alerts2026pass"


def _log(app, action, user_id=None, username=None, count=1, times=1):
    from crm_meta.services import audit

    with app.app_context():
        b = app.extensions["crm"]
        actor = Actor(user_id, "zh", username, "10.0.0.9", "req-alert")
        for _ in range(times):
            audit.log_event(b.db.session, b.models.system, actor, action, entity="customer", count=count)
        b.db.session.commit()
        b.db.session.remove()


def _alerts(app):
    with app.app_context():
        b = app.extensions["crm"]
        t = b.models.system["alert"]
        rows = [dict(r) for r in b.db.session.execute(select(t).order_by(t.c.id)).mappings()]
        b.db.session.remove()
        return rows


def _user(app, username, role):
    with app.app_context():
        sm = app.appbuilder.sm
        user = sm.add_user(username, "测", "试", f"{username}@crm.invalid", sm.find_role(role) or sm.add_role(role),
                           PASSWORD)
        return user.id


def test_mass_export_alert_after_more_than_200_records_per_user(app):
    uid = _user(app, "exporter", "operations")
    _log(app, "export", uid, "exporter", count=150)
    _log(app, "export", uid, "exporter", count=50)
    assert _alerts(app) == []  # 200 is not more than 200
    other = _user(app, "colleague", "operations")
    _log(app, "export", other, "colleague", count=199)
    assert _alerts(app) == []  # another user's exports do not add up with theirs
    _log(app, "export", uid, "exporter", count=1)
    alerts = _alerts(app)
    assert [(a["rule"], a["subject"], a["user_id"], a["hits"], a["status"]) for a in alerts] == [
        ("mass_export", "exporter", uid, 201, "open")]
    _log(app, "export", uid, "exporter", count=10)
    alerts = _alerts(app)
    assert len(alerts) == 1 and alerts[0]["hits"] == 211  # the open alert is kept up to date, not repeated


def test_mass_reveal_alert_after_more_than_20(app):
    uid = _user(app, "revealer", "sales_manager")
    _log(app, "reveal", uid, "revealer", times=20)
    assert _alerts(app) == []
    _log(app, "reveal", uid, "revealer")
    assert [(a["rule"], a["hits"], a["window_minutes"]) for a in _alerts(app)] == [("mass_reveal", 21, 60)]


def test_thresholds_come_from_the_dictionary_at_run_time(app):
    with app.app_context():
        b = app.extensions["crm"]
        t = b.models.system["dict_item"]
        b.db.session.execute(t.update().where(t.c.dictionary == "alert_rule", t.c.code == "mass_reveal")
                             .values(attrs={"event": "reveal", "more_than": 2, "window_minutes": 5, "per": "user"},
                                     origin="admin"))
        b.db.session.commit()
        b.db.session.remove()
    uid = _user(app, "revealer2", "sales_manager")
    _log(app, "reveal", uid, "revealer2", times=2)
    assert _alerts(app) == []
    _log(app, "reveal", uid, "revealer2")
    assert [(a["rule"], a["hits"], a["threshold"]) for a in _alerts(app)] == [("mass_reveal", 3, 3)]


def _fail_login(client, username):
    token = csrf_token(client, "/login/")
    return client.post("/login/", data={"username": username, "password": "wrong-password-1", "csrf_token": token})


def test_failed_sign_ins_raise_an_alert_admins_see_and_acknowledge(app, client):
    outsider = app.test_client()
    for _ in range(4):
        _fail_login(outsider, "victim")
    assert _alerts(app) == []
    _fail_login(outsider, "victim")
    alerts = _alerts(app)
    assert [(a["rule"], a["subject"], a["hits"], a["status"]) for a in alerts] == [
        ("login_failures", "victim", 5, "open")]
    alert_id = alerts[0]["id"]

    dashboard = client.get("/").get_data(as_text=True)
    assert 'data-widget="security_alerts"' in dashboard
    assert re.search(r'crm-open-alerts.*?<span class="badge alert-danger">1</span>', dashboard, re.S)
    assert "连续登录失败" in dashboard and "victim" in dashboard

    listing = client.get("/crm/alerts/").get_data(as_text=True)
    assert f'data-id="{alert_id}"' in listing and 'data-status="open"' in listing

    # Acknowledging is a POST with the CSRF token; a GET or a forged POST changes nothing.
    assert client.get(f"/crm/alerts/{alert_id}/acknowledge").status_code == 405
    assert client.post(f"/crm/alerts/{alert_id}/acknowledge").status_code == 400
    assert _alerts(app)[0]["status"] == "open"
    token = csrf_token(client, "/crm/alerts/")
    resp = client.post(f"/crm/alerts/{alert_id}/acknowledge", data={"csrf_token": token})
    assert resp.status_code == 302
    ack = _alerts(app)[0]
    assert ack["status"] == "acknowledged" and ack["acknowledged_by"] == "admin" and ack["acknowledged_at"]
    assert re.search(r'<span class="badge">0</span>', client.get("/").get_data(as_text=True))

    # A sales rep sees neither the box nor the list.
    _user(app, "rep1", "sales_rep")
    rep = login(app.test_client(), "rep1", PASSWORD)
    assert 'data-widget="security_alerts"' not in rep.get("/").get_data(as_text=True)
    assert rep.get("/crm/alerts/").status_code == 403
    token = csrf_token(rep, "/customer/add")
    assert rep.post(f"/crm/alerts/{alert_id}/acknowledge", data={"csrf_token": token}).status_code == 403
