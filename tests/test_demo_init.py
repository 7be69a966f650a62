"""`crm init --demo` as `make run` uses it: the demo users each have work in their own screens, and the
record history names who did what."""
from __future__ import annotations

import secrets

from support import sign_in


def _ids(api, entity: str) -> list[dict]:
    resp = api.get(f"/api/v1/{entity}/?q=(page_size:100)")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json["result"]


def test_init_demo_gives_every_department_work_and_names_the_people(make_app, monkeypatch):
    password = secrets.token_urlsafe(12)
    monkeypatch.setenv("CRM_DEMO_PASSWORD", password)
    app = make_app()
    result = app.test_cli_runner().invoke(args=["crm", "init", "--demo", "--customers", "40"])
    assert result.exit_code == 0, result.output
    assert "Demo data loaded" in result.output
    with app.app_context():
        sm = app.appbuilder.sm
        ids = {u: sm.find_user(username=u).id for u in ("chenjing", "wangfang")}

    admin = sign_in(app)
    tickets = _ids(admin, "feedback")
    assert tickets, "the demo has feedback tickets"

    # the service desk sees the tickets it handles (most of them), each owned by one of its people
    service = sign_in(app, "chenjing", password)
    handled = _ids(service, "feedback")
    assert len(handled) * 2 >= len(tickets), (len(handled), len(tickets))
    assert {t["owner"] for t in handled} == {ids["chenjing"]}

    # a sales rep sees their own customers and nobody else's
    rep = sign_in(app, "wangfang", password)
    mine = _ids(rep, "customer")
    assert mine and {c["owner"] for c in mine} == {ids["wangfang"]}

    # the history of a record names the person who entered it, not a blank
    history = admin.get(f"/crm/history/customer/{mine[0]['id']}")
    assert history.status_code == 200, history.get_data(as_text=True)
    created = [row for row in history.json["entries"] if row["action"] == "create"]
    assert created and created[0]["username"] == "wangfang", history.json
