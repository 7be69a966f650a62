"""REST lists write their rows with ``RowWriter`` (crm_meta/web/schemas.py) instead of marshmallow's
``dump`` + ``Policy.project``: the JSON must be the same, byte for byte, for every shipped entity and
every role (hidden fields, masked values), with dates, datetimes, decimals, enums, tags, references,
booleans, empty and missing values. SQLite and PostgreSQL.
"""
from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

import pytest
from flask import jsonify
from test_access_matrix import World

from crm_meta.web import context


@pytest.fixture
def world(make_app) -> World:
    w = World(make_app(CRM_DISABLED_PLUGINS="crm_lifecycle"))
    _vary_values(w.app)
    return w


def _odd_value(f, column):
    """A value at the edges of what the field's type serialises (None where the column allows)."""
    s = f.storage
    if s == "decimal":
        return Decimal("0.5")
    if s == "integer":
        return 0
    if s == "boolean":
        return False
    if s == "date":
        return date(1999, 12, 31)
    if s == "datetime":
        return datetime(2026, 1, 2, 3, 4, 5, 678901)
    if s in ("string", "text") and not f.unique and column.nullable:
        return ""
    return getattr(column, "_keep", None)


def _vary_values(app) -> None:
    """One record of each entity with every optional column empty, another with edge values,
    a third with several tags."""
    with app.app_context():
        b = app.extensions["crm"]
        session = b.db.session
        for entity in b.registry.entities:
            model = b.models.model(entity.name)
            objs = session.query(model).order_by(model.id).all()
            table = model.__table__
            for f in entity.fields:
                if not f.column or f.system or f.column not in table.c or f.is_multi:
                    continue
                column = table.c[f.column]
                if len(objs) > 1 and column.nullable:
                    setattr(objs[1], f.column, None)
                if len(objs) > 2:
                    value = _odd_value(f, column)
                    if value is not None:
                        setattr(objs[2], f.column, value)
            for f in entity.fields:
                if f.is_multi and len(objs) > 3:
                    codes = [i.code for i in b.registry.dictionary(f.dictionary).items]
                    setattr(objs[1], f.name, [])
                    setattr(objs[3], f.name, sorted(codes, reverse=True)[:3])
                    if len(objs) > 4:  # codes whose order differs between collations (any code may be stored)
                        setattr(objs[4], f.name, ["b", "Zeta", "a_b", "alpha", "B.1", "a-b", "10", "9"])
        session.commit()


def _apis(app) -> dict:
    from crm_meta.web.api import EntityApi

    return {v.entity.name: v for v in app.appbuilder.baseviews if isinstance(v, EntityApi)}


def _expected(api, objs, policy) -> list[dict]:
    return [policy.project(api.entity.name, d) for d in api.show_model_schema.dump(objs, many=True)]


def _same(got, want) -> None:
    """Equal as JSON text (1 vs 1.0 vs true differ) and in key order."""
    assert json.dumps(got, ensure_ascii=False) == json.dumps(want, ensure_ascii=False)


def test_row_writer_writes_what_marshmallow_and_the_policy_write(world):
    app = world.app
    apis = _apis(app)
    assert set(apis) == {e.name for e in world.registry.entities}
    users = ["admin"] + [f"{r.name}_me" for r in world.registry.roles]
    checked_masked = checked_hidden = 0
    for username in users:
        api = world.api(username) if username != "admin" else None
        headers = api.headers if api else _admin_headers(app)
        for name, view in apis.items():
            assert view.row_writer.plan is not None, name  # every shipped entity takes the fast path
            with app.test_request_context("/", headers=headers):
                b = app.extensions["crm"]
                model = b.models.model(name)
                objs = b.db.session.query(model).order_by(model.id).all()
                policy = context.policy()
                access = policy.access(name)
                checked_masked += bool(access.masked)
                checked_hidden += bool(access.hidden)
                _same(view.row_writer.rows(objs, policy, name), _expected(view, objs, policy))
                b.db.session.remove()
    assert checked_masked and checked_hidden  # the roles exercise masking and hidden fields


def test_list_endpoint_json_is_marshmallows(world):
    """Through the endpoint: every role's page of every entity, against dump + project of the
    same rows in the same order — a month on, when the tickets' SLA has been breached (a computed
    attribute read live, whose stored column has the same name)."""
    from datetime import timedelta

    from crm_meta.services import clock

    with clock.frozen(datetime.now() + timedelta(days=30)):
        _compare_lists(world)


def _compare_lists(world) -> None:
    app = world.app
    apis = _apis(app)
    breached = 0
    for role in world.registry.roles:
        username = f"{role.name}_me"
        api = world.api(username)
        for name, view in apis.items():
            resp = api.get(f"/api/v1/{name}/?q=(page_size:100)")
            if resp.status_code != 200:
                assert resp.status_code in (401, 403), (username, name, resp.status_code)
                continue
            body = resp.json
            with app.test_request_context("/", headers=api.headers):
                b = app.extensions["crm"]
                model = b.models.model(name)
                by_id = {o.id: o for o in b.db.session.query(model).filter(model.id.in_(body["ids"]))}
                objs = [by_id[i] for i in body["ids"]]
                want = jsonify(count=body["count"], ids=body["ids"],
                               result=_expected(view, objs, context.policy())).get_data()
                b.db.session.remove()
            assert resp.get_data() == want, (username, name)  # the response's bytes
            assert [r["id"] for r in body["result"]] == body["ids"]
            breached += sum(1 for r in body["result"] if r.get("sla_breached") is True)
    assert breached  # the comparison covered breached tickets


def _admin_headers(app) -> dict:
    from support import sign_in

    return sign_in(app).headers


def test_row_writer_with_plugin_fields(make_app):
    """The lifecycle plugin's decimal, datetime, enum and text fields on customers, its own entity."""
    from crm_meta.services.dictionaries import Dictionaries
    from crm_meta.services.records import Actor, RecordService
    from factories import api_record

    app = make_app()
    headers = _admin_headers(app)
    with app.app_context():
        b = app.extensions["crm"]
        session = b.db.session
        dicts = Dictionaries.load(session, b.models.system["dict_item"])
        customer = b.registry.entity("customer")
        assert customer.has_field("churn_risk")
        admin_id = app.appbuilder.sm.find_user(username="admin").id
        svc = RecordService(session, b.models, "customer", Actor(admin_id), dicts)
        objs = [svc.create(api_record(customer, {}, admin_id, dicts)) for _ in range(3)]
        objs[0].churn_risk, objs[0].scored_at = Decimal("0.1234"), datetime(2026, 3, 4, 5, 6, 7, 891)
        objs[0].lifecycle_stage, objs[0].risk_explanation, objs[0].predicted_value = "at_risk", "原因", Decimal("10.00")
        objs[1].churn_risk = Decimal("1")
        run = b.models.model("prediction_run")
        session.add(run(run_no="P20260101001", task="score", status="ok", started_at=datetime(2026, 1, 1, 0, 0, 1),
                        duration_s=Decimal("1.50"), rows_scored=3, roc_auc=None, version=1))
        session.commit()
    apis = _apis(app)
    for name in ("customer", "prediction_run"):
        view = apis[name]
        assert view.row_writer.plan is not None
        with app.test_request_context("/", headers=headers):
            model = b.models.model(name)
            rows = b.db.session.query(model).order_by(model.id).all()
            assert rows
            policy = context.policy()
            _same(view.row_writer.rows(rows, policy, name), _expected(view, rows, policy))
            b.db.session.remove()


def test_list_counts_ride_on_the_page(world):
    """The capped count read with the page is the count of the rows the user may read — on a page
    past the end too (then nothing carries it); the page, its count and the rows' codes are one
    statement on the entity's table."""
    from sqlalchemy import event

    from crm_meta.services.records import COUNT_CAP

    app = world.app
    with app.app_context():
        engine = app.extensions["crm"].db.engine
    for role in world.registry.roles:
        api = world.api(f"{role.name}_me")
        for name in _apis(app):
            statements: list[str] = []

            def seen(conn, cursor, statement, *args):
                statements.append(statement)

            event.listen(engine, "before_cursor_execute", seen)
            try:
                resp = api.get(f"/api/v1/{name}/?q=(page_size:2)")
            finally:
                event.remove(engine, "before_cursor_execute", seen)
            if resp.status_code != 200:
                continue
            table = app.extensions["crm"].models.model(name).__table__.name
            on_table = [s for s in statements if f"FROM {table}" in s or f"FROM {table}__" in s]
            assert len(on_table) == 1, (name, on_table)
            with app.test_request_context("/", headers=api.headers):
                b = app.extensions["crm"]
                model = b.models.model(name)
                want = min(context.policy().scope(name, b.db.session.query(model), model).count(), COUNT_CAP)
                b.db.session.remove()
            assert resp.json["count"] == want, (role.name, name)
            past = api.get(f"/api/v1/{name}/?q=(page:50,page_size:2)")
            assert past.status_code == 200 and past.json["result"] == [] and past.json["count"] == want
            searched = api.get(f"/api/v1/{name}/?q=(page_size:2)&search=zzz-no-such-value")
            assert searched.json["count"] == 0 and searched.json["result"] == []
