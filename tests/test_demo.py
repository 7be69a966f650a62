"""Demo data: a fresh SQLite database filled by load_demo looks like a CRM someone has been using."""
from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

import crm_meta.db.engine  # noqa: F401  (sqlite pragmas)
from crm_meta.db import migrate
from crm_meta.db.tables import build_models, utcnow
from crm_meta.metadata.fieldtypes import PHONE_PATTERN
from crm_meta.schema import load_registry
from crm_meta.services.demo import ENTITIES, credit_code, load_demo
from crm_meta.services.dictionaries import sync_from_registry
from flask_appbuilder.security.sqla.models import Model, User

CUSTOMERS = 60


@pytest.fixture(scope="module")
def models():
    registry = load_registry(["schemas"])
    return build_models(registry, User)


def _fresh_db(path, ms):
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as c:
        Model.metadata.create_all(c)
        migrate.apply(c, ms.metadata)
        sync_from_registry(c, ms.system["dict_item"], ms.registry)
    with Session(engine) as s:
        users = [User(first_name=f, last_name=l, username=u, email=f"{u}@demo.cn", active=True)
                 for f, l, u in (("伟", "王", "wangwei"), ("芳", "李", "lifang"), ("强", "张", "zhangqiang"))]
        s.add_all(users)
        s.commit()
        ids = [u.id for u in users]
    return engine, ids


def _load(path, ms):
    engine, owners = _fresh_db(path, ms)
    with Session(engine) as s:
        counts = load_demo(s, ms, owners, customers=CUSTOMERS)
    return engine, owners, counts


@pytest.fixture(scope="module")
def demo(tmp_path_factory, models):
    engine, owners, counts = _load(tmp_path_factory.mktemp("demo") / "demo.db", models)
    yield engine, owners, counts
    engine.dispose()


def _rows(engine, ms, entity, *cols):
    model = ms.model(entity)
    with Session(engine) as s:
        return s.execute(select(*(getattr(model, c) for c in cols)).order_by(model.id)).all()


def _codes(ms, name):
    return {i.code for i in ms.registry.dictionary(name).items}


def test_every_entity_has_records_and_counts_match(demo, models):
    engine, _, counts = demo
    assert set(counts) == set(ENTITIES)
    assert counts["customer"] == CUSTOMERS
    with Session(engine) as s:
        for entity in ENTITIES:
            stored = s.scalar(select(func.count()).select_from(models.model(entity)))
            assert counts[entity] > 0, entity
            assert stored == counts[entity], entity


def test_every_code_of_the_main_dictionaries_shows_up(demo, models):
    engine = demo[0]
    for entity, field, dictionary in (("customer", "customer_type", "customer_type"),
                                      ("customer", "industry", "industry"),
                                      ("customer", "region", "region"),
                                      ("opportunity", "stage", "opportunity_stage"),
                                      ("demand", "demand_type", "demand_type"),
                                      ("demand", "priority", "priority"),
                                      ("demand", "status", "demand_status"),
                                      ("feedback", "feedback_type", "feedback_type"),
                                      ("follow_up", "method", "follow_up_method")):
        seen = {v for (v,) in _rows(engine, models, entity, field)}
        assert _codes(models, dictionary) <= seen, (entity, field)
    grades = {v for (v,) in _rows(engine, models, "customer", "grade")}
    assert {"A", "B", "C"} <= grades


def test_customer_numbers_codes_and_phones_look_right(demo, models):
    rows = _rows(demo[0], models, "customer", "customer_no", "credit_code", "contact_phone")
    numbers = [r.customer_no for r in rows]
    assert all(re.fullmatch(r"C\d{8}\d{3,}", n) for n in numbers), numbers[:5]
    assert len(set(numbers)) == len(numbers)
    codes = [r.credit_code for r in rows if r.credit_code]
    assert len(set(codes)) == len(codes)
    assert 0.5 * CUSTOMERS <= len(codes) <= 0.9 * CUSTOMERS  # ~70 % have one
    pattern = models.registry.entity("customer").field("credit_code").pattern
    assert all(re.fullmatch(pattern, c) for c in codes)
    assert all(re.fullmatch(PHONE_PATTERN, r.contact_phone) for r in rows)


def test_credit_codes_carry_valid_check_characters():
    code = credit_code("310115", 1)
    assert len(code) == 18 and code.startswith("91310115")
    assert len({credit_code("310115", i) for i in range(1, 2000)}) == 1999


def test_every_owner_has_customers(demo, models):
    _, owners, _ = demo
    per_owner = Counter(o for (o,) in _rows(demo[0], models, "customer", "owner_id"))
    assert set(per_owner) == set(owners)
    assert all(n > 0 for n in per_owner.values())


def test_child_records_point_at_existing_customers(demo, models):
    customers = {i for (i,) in _rows(demo[0], models, "customer", "id")}
    for entity in ("contact", "follow_up", "demand", "feedback", "opportunity"):
        refs = {c for (c,) in _rows(demo[0], models, entity, "customer_id")}
        assert refs and refs <= customers, entity
    followed = {c for (c,) in _rows(demo[0], models, "follow_up", "customer_id")}
    assert followed == customers  # every customer has at least one follow-up


def test_opportunities_carry_the_outputs_of_their_stage(demo, models):
    rows = _rows(demo[0], models, "opportunity", "stage", "contract_no", "contract_amount", "effective_date",
                 "lost_reason")
    for r in rows:
        if r.stage in ("contract_signed", "won_paid"):
            assert r.contract_no and r.contract_amount and r.effective_date, r
        if r.stage == "lost":
            assert r.lost_reason, r


def test_history_is_spread_over_the_past_year(demo, models):
    stamps = [c for (c,) in _rows(demo[0], models, "customer", "created_at")]
    now = utcnow()
    assert max(stamps) <= now + timedelta(minutes=1)
    assert min(stamps) >= now - timedelta(days=367)
    assert max(stamps) - min(stamps) > timedelta(days=120)
    followed = [f for (f,) in _rows(demo[0], models, "follow_up", "followed_at")]
    assert max(followed) - min(followed) > timedelta(days=60)
    versions = {v for entity in ENTITIES for (v,) in _rows(demo[0], models, entity, "version")}
    assert versions == {1}
    # each record was made at its own past moment: its number's date, its audit entry
    from crm_meta.services import clock

    numbered = _rows(demo[0], models, "customer", "id", "customer_no", "created_at")
    assert all(no[1:9] == clock.to_local(at).strftime("%Y%m%d") for _, no, at in numbered), numbered[:3]
    audit = models.system["audit"]
    with Session(demo[0]) as s:
        created = dict(s.execute(select(audit.c.record_id, audit.c.at).where(
            audit.c.entity == "customer", audit.c.action == "create", audit.c.field == "name")).all())
    assert created and all(created[rid] == at for rid, _, at in numbered if rid in created)


def test_same_seed_gives_the_same_customers(demo, models, tmp_path):
    engine, _, counts = _load(tmp_path / "again.db", models)
    try:
        again = _rows(engine, models, "customer", "name", "customer_type", "credit_code")
        first = _rows(demo[0], models, "customer", "name", "customer_type", "credit_code")
        assert again == first
        assert counts == demo[2]
    finally:
        engine.dispose()
