"""REST for notifications: GET /api/v1/notifications/ (the caller's own, newest first, unread_only,
paging, in the caller's language) and POST /api/v1/notifications/read ({"ids": [...]} or {} for all;
others' ids ignored); bearer token or session cookie + CSRF; every role; documented in the OpenAPI
document — SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from crm_meta.services import clock, notifications
from support import csrf_token, login
from test_access_matrix import World
from test_transition_effects import api_as
from test_cadence import PASSWORD, Crm

T0 = datetime(2026, 3, 2, 9, 0)


def seed(app, user_id: int, n: int, kind: str = "follow_up_due", start: datetime = T0) -> list[int]:
    """``n`` notices for the user, one minute apart (oldest first); returns their ids."""
    with app.app_context():
        b = app.extensions["crm"]
        table = b.models.system["notification"]
        for i in range(n):
            with clock.frozen(start + timedelta(minutes=i)):
                day = f"2026-03-{i + 1:02d}"
                notifications.notify(b.db.session, table, [{
                    "user_id": user_id, "kind": kind, "dedupe_key": f"{day}:{i}", "entity": "customer",
                    "message": f"{day} 跟进提醒：今日到期 {i} 个客户，逾期 0 个",
                    "detail": {"day": day, "due_today": i, "overdue": 0, "oldest": None}}])
        b.db.session.commit()
        return list(b.db.session.execute(select(table.c.id).where(table.c.user_id == user_id)
                                         .order_by(table.c.id)).scalars())


def test_list_is_the_callers_own_newest_first_with_paging_and_unread_only(make_app):
    app = make_app()
    crm = Crm(app)
    me = crm.user("rep_n", "sales_rep", "sales_east")
    other = crm.user("rep_o", "sales_rep", "sales_east")
    mine = seed(app, me, 5)
    theirs = seed(app, other, 2)
    api = api_as(app, "rep_n")
    got = api.get("/api/v1/notifications/")
    assert got.status_code == 200, got.json
    body = got.json
    assert body["count"] == 5 and body["unread"] == 5 and body["page"] == 0 and body["page_size"] == 20
    assert [n["id"] for n in body["result"]] == mine[::-1]  # newest first, nobody else's
    first = body["result"][0]
    assert first["kind"] == "follow_up_due" and first["read_at"] is None and first["url"] == "/crm/followups/"
    assert first["text"] == "2026-03-05 跟进提醒：今日到期 4 个客户，逾期 0 个"
    assert first["created_at"] == "2026-03-02T09:04:00"
    en = api.get("/api/v1/notifications/?_l_=en").json["result"][0]["text"]
    assert en == "Follow-ups for 2026-03-05: 4 customer(s) due today, 0 overdue"

    page1 = api.get("/api/v1/notifications/?page=1&page_size=2").json
    assert page1["count"] == 5 and [n["id"] for n in page1["result"]] == mine[::-1][2:4]
    assert api.get("/api/v1/notifications/?page=9&page_size=2").json["result"] == []

    marked = api.post("/api/v1/notifications/read", json={"ids": [mine[4], mine[1], theirs[0]]})
    assert marked.status_code == 200 and marked.json == {"marked": 2, "unread": 3}  # theirs ignored
    unread = api.get("/api/v1/notifications/?unread_only=true").json
    assert unread["count"] == 3 and [n["id"] for n in unread["result"]] == [mine[3], mine[2], mine[0]]
    everything = api.get("/api/v1/notifications/?unread_only=false").json
    assert everything["count"] == 5 and everything["result"][0]["read_at"] is not None
    assert api.post("/api/v1/notifications/read", json={"ids": [mine[4]]}).json == {"marked": 0, "unread": 3}

    all_read = api.post("/api/v1/notifications/read", json={})
    assert all_read.json == {"marked": 3, "unread": 0}
    assert api.get("/api/v1/notifications/?unread_only=1").json["count"] == 0
    other_api = api_as(app, "rep_o")  # the other user's notices are untouched
    assert other_api.get("/api/v1/notifications/?unread_only=true").json["count"] == 2


def test_bad_requests_are_refused_and_nothing_is_marked(make_app):
    app = make_app()
    crm = Crm(app)
    me = crm.user("rep_p", "sales_rep", "sales_east")
    seed(app, me, 2)
    api = api_as(app, "rep_p")
    for query in ("page=-1", "page=x", "page_size=0", "page_size=101", "unread_only=maybe"):
        resp = api.get(f"/api/v1/notifications/?{query}")
        assert resp.status_code == 400, query
    for body in ([], {"ids": "1"}, {"ids": [1, "2"]}, {"ids": [True]}, {"ids": list(range(1001))},
                 {"all": True}):
        resp = api.post("/api/v1/notifications/read", json=body)
        assert resp.status_code == 400, body
    no_json = api.post("/api/v1/notifications/read", data="ids=1")
    assert no_json.status_code == 400
    assert api.post("/api/v1/notifications/read", json={"ids": []}).json == {"marked": 0, "unread": 2}
    assert api.get("/api/v1/notifications/").json["unread"] == 2
    anonymous = app.test_client()
    assert anonymous.get("/api/v1/notifications/").status_code == 401
    assert anonymous.post("/api/v1/notifications/read", json={}).status_code in (400, 401)
    assert api.get("/api/v1/notifications/").json["unread"] == 2


def test_session_cookie_needs_the_csrf_token_and_every_role_may_use_it(make_app):
    world = World(make_app(CRM_DISABLED_PLUGINS="crm_lifecycle"))
    app = world.app
    uid = world.user_ids["sales_rep_me"]
    seed(app, uid, 1)
    ui = world.browser("sales_rep_me")
    assert ui.get("/api/v1/notifications/").json["count"] == 1  # the browser's session signs in
    assert ui.post("/api/v1/notifications/read", json={}).status_code == 400  # no CSRF token
    assert ui.get("/api/v1/notifications/").json["unread"] == 1
    token = csrf_token(ui, "/crm/notifications/")
    done = ui.post("/api/v1/notifications/read", json={}, headers={"X-CSRFToken": token})
    assert done.status_code == 200 and done.json == {"marked": 1, "unread": 0}
    for role in world.registry.roles:
        api = world.api(f"{role.name}_me")
        assert api.get("/api/v1/notifications/").status_code == 200, role.name
        assert api.post("/api/v1/notifications/read", json={}).status_code == 200, role.name
        spec = api.get("/api/v1/_openapi").json
        assert {"/api/v1/notifications/", "/api/v1/notifications/read"} <= set(spec["paths"]), role.name
    spec = world.api("sales_rep_me").get("/api/v1/_openapi").json
    listing = spec["paths"]["/api/v1/notifications/"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"unread_only", "page", "page_size"}
    assert "result" in listing["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert "ids" in spec["paths"]["/api/v1/notifications/read"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]


def test_a_follow_up_task_notice_links_to_the_customer(make_app):
    app = make_app(CRM_DISABLED_PLUGINS="crm_lifecycle")
    crm = Crm(app)
    rep = crm.user("rep_q", "sales_rep", "sales_east")
    with clock.frozen(T0):
        cid = crm.customer("丙方公司", "B", rep)
        rid = crm.create("opportunity", {"name": "机会", "customer": cid, "owner": rep}, rep)
        api = api_as(app, "rep_q")
        move = f"/api/v1/opportunity/{rid}/transition"
        assert api.post(move, json={"to": "needs_analysis"}).status_code == 200
        assert api.post(move, json={"to": "proposal", "key_needs": "x"}).status_code == 200
        [task] = api.get("/api/v1/notifications/").json["result"]
        assert task["kind"] == "follow_up_task" and task["url"] == f"/customer/show/{cid}"
        assert (task["entity"], task["record_id"]) == ("customer", cid)
        ui = login(app.test_client(), "rep_q", PASSWORD)
        assert "未读通知: <strong>1</strong>" in ui.get("/").get_data(as_text=True)
