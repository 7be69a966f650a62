"""A list's statements are built once per user's policy and request shape and then reused
(``EntityInterface.page``, ``crm_meta.web.principals.Plans``): every part of the shape must still be honoured when the
same user asks again in turn — filters, their values, search, order, page and page size — and a
record saved between two identical requests shows in the second. SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from factories import api_record

from crm_meta.services.dictionaries import Dictionaries


@pytest.fixture
def customers(app, api):
    """Nine customers through the API: grades A, B, C three times each, names with their grade."""
    with app.app_context():
        b = app.extensions["crm"]
        dicts = Dictionaries.load(b.db.session, b.models.system["dict_item"])
        uid = app.appbuilder.sm.find_user(username="admin").id
        entity = b.registry.entity("customer")
    made = {}
    for i in range(9):
        grade = "ABC"[i % 3]
        body = {**api_record(entity, {}, uid, dicts), "grade": grade, "name": f"Plan-{grade}-{i} 有限公司"}
        resp = api.post("/api/v1/customer/", json=body)
        assert resp.status_code == 201, resp.json
        made[resp.json["id"]] = grade
    return made


def _list(api, q: str = "", search: str | None = None) -> dict:
    url = "/api/v1/customer/" + (f"?q=({q})" if q else "")
    if search is not None:
        url += ("&" if q else "?") + f"search={search}"
    resp = api.get(url)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json


def test_each_request_shape_gets_its_own_rows_when_asked_in_turn(api, customers):
    by_grade = {g: {i for i, v in customers.items() if v == g} for g in "ABC"}
    for _ in range(2):  # the second round reads the plans the first one built
        for grade, ids in by_grade.items():
            body = _list(api, f"filters:!((col:grade,opr:eq,value:{grade}))")
            assert set(body["ids"]) == ids and body["count"] == 3, grade
        assert _list(api)["count"] == 9
        assert set(_list(api, search="Plan-B")["ids"]) == by_grade["B"]
        assert set(_list(api, search="Plan-C")["ids"]) == by_grade["C"]
        asc = _list(api, "order_column:name,order_direction:asc")["ids"]
        desc = _list(api, "order_column:name,order_direction:desc")["ids"]
        assert asc == list(reversed(desc)) and len(asc) == 9
        first = _list(api, "order_column:name,order_direction:asc,page:0,page_size:4")["ids"]
        second = _list(api, "order_column:name,order_direction:asc,page:1,page_size:4")["ids"]
        assert first == asc[:4] and second == asc[4:8]


def test_a_record_saved_between_two_identical_requests_shows_in_the_second(app, api, customers):
    q = "filters:!((col:grade,opr:eq,value:A)),order_column:created_at,order_direction:desc"
    before = _list(api, q)
    assert before["count"] == 3
    with app.app_context():
        b = app.extensions["crm"]
        dicts = Dictionaries.load(b.db.session, b.models.system["dict_item"])
        uid = app.appbuilder.sm.find_user(username="admin").id
        body = {**api_record(b.registry.entity("customer"), {}, uid, dicts), "grade": "A", "name": "Plan-A-new 有限公司"}
    new = api.post("/api/v1/customer/", json=body).json["id"]
    after = _list(api, q)
    assert after["count"] == 4 and after["ids"][0] == new


def test_the_plan_store_keeps_the_most_recently_used_within_its_bound():
    from crm_meta.web.principals import Plans

    plans = Plans(size=2)
    plans.put("a", 1)
    plans.put("b", 2)
    assert plans.get("a") == 1  # a is now the most recent
    plans.put("c", 3)
    assert len(plans) == 2 and plans.get("b") is None and plans.get("a") == 1 and plans.get("c") == 3


def test_arguments_are_checked_each_time_whatever_was_asked_before(api, customers):
    """Valid list arguments are remembered once checked (``crm_meta.web.rison``); an invalid one is
    refused every time, before and after valid ones, and a valid one answers every time."""
    bad = ["page:x", "order_direction:sideways", "filters:3", "keys:(x:1)"]
    for _ in range(2):
        for q in bad:
            resp = api.get(f"/api/v1/customer/?q=({q})")
            assert resp.status_code == 400, (q, resp.status_code)
            assert "rison" in resp.json["message"]
        assert _list(api, "page:0,page_size:2")["ids"] == _list(api, "page:0,page_size:2")["ids"]


def _rename_flush_and_roll_back(session, model) -> tuple[int, str]:
    """Rename the first record, send it to the database (not committed), roll back: (its id, its name before)."""
    first = session.query(model).order_by(model.id).first()
    pk, before = first.id, first.name
    first.name = "half-way"
    session.flush()
    session.rollback()
    return pk, before


def test_connections_go_back_to_the_pool_transactional_after_a_list(app, api, customers):
    """A list's page may run in autocommit (PostgreSQL: no BEGIN/ROLLBACK around its one statement);
    the connection must leave it behind: the next write on it is one transaction again, so a
    write that fails half-way leaves nothing."""
    for _ in range(3):
        assert _list(api, "page:0,page_size:5")["count"] == 9
    with app.app_context():
        b = app.extensions["crm"]
        engine, model = b.db.engine, b.models.model("customer")
        held = [engine.connect() for _ in range(max(engine.pool.checkedin(), 1))]  # every pooled connection
        try:
            for conn in held:
                assert not getattr(conn.connection.driver_connection, "autocommit", False)
        finally:
            for conn in held:
                conn.close()
        session = b.db.session
        pk, before = _rename_flush_and_roll_back(session, model)
        session.remove()
        assert b.db.session.get(model, pk).name == before
        b.db.session.remove()


def test_a_list_leaves_the_session_of_an_app_context_that_outlives_it_transactional(app, api, customers):
    """A request inside an app context that is already pushed (a script, ``flask shell``) shares that
    context's session: after a list, a write there is still one transaction that a rollback undoes."""
    for _ in range(2):
        assert _list(api)["count"] == 9  # warm: the page is the request's only statement
    with app.app_context():
        b = app.extensions["crm"]
        session, model = b.db.session, b.models.model("customer")
        assert _list(api)["count"] == 9  # this request runs in the context pushed here
        pk, before = _rename_flush_and_roll_back(session, model)
        assert session.get(model, pk).name == before
        session.remove()
