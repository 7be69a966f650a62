"""Auto-numbers stay unique under concurrent inserts; a stale save never overwrites a newer one."""
from __future__ import annotations

import re
import threading
from datetime import date, datetime

import pytest
from sqlalchemy.orm import Session

from crm_meta.errors import VersionConflict
from crm_meta.services import numbering
from crm_meta.services.records import Actor, RecordService

CUSTOMER = {"name": "并发客户", "customer_type": "prospect", "industry": "retail",
            "contact_name": "王五", "contact_phone": "13900001111"}


def _admin_id(app):
    with app.app_context():
        return app.appbuilder.sm.find_user(username="admin").id


def test_numbers_unique_under_concurrent_inserts(app):
    models, engine = app.extensions["crm"].models, None
    with app.app_context():
        engine = app.extensions["crm"].db.engine
    uid = _admin_id(app)
    numbers, errors = [], []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(15):
                with Session(engine) as session:
                    svc = RecordService(session, models, "customer", Actor(uid))
                    obj = svc.create({**CUSTOMER, "name": f"并发客户 {n}-{i}"})
                    session.commit()
                    with lock:
                        numbers.append(obj.customer_no)
        except Exception as exc:  # reported below with the thread's context
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(numbers) == 120 and len(set(numbers)) == 120
    today = date.today().strftime("%Y%m%d")
    assert all(re.fullmatch(rf"C{today}\d{{3}}", n) for n in numbers)
    assert sorted(int(n[-3:]) for n in numbers) == list(range(1, 121))


def test_sequence_widens_past_its_digits_and_restarts_daily(app):
    models = app.extensions["crm"].models
    seq = models.system["sequence"]
    with app.app_context():
        session = app.extensions["crm"].db.session
        today = datetime.now().strftime("%Y%m%d")
        session.execute(seq.insert().values(name="customer.customer_no", period=f"C{today}|", value=999))
        session.commit()
        svc = RecordService(session, models, "customer", Actor(_admin_id(app)))
        obj = svc.create(dict(CUSTOMER))
        session.commit()
        assert obj.customer_no == f"C{today}1000"
    assert numbering.render("C{YYYYMMDD}{seq:3}", datetime(2024, 5, 1), 1) == "C20240501001"
    assert numbering.render("G{YY}-{MM}/{seq:4}", datetime(2024, 5, 1), 12345) == "G24-05/12345"


def _saved_customer(app):
    """(models, engine, admin id, id of a freshly saved customer)."""
    models = app.extensions["crm"].models
    uid = _admin_id(app)
    with app.app_context():
        engine = app.extensions["crm"].db.engine
    with Session(engine) as s:
        rid = RecordService(s, models, "customer", Actor(uid)).create(dict(CUSTOMER)).id
        s.commit()
    return models, engine, uid, rid


def test_second_of_two_concurrent_edits_gets_a_conflict(app):
    models, engine, uid, rid = _saved_customer(app)
    with Session(engine) as alice, Session(engine) as bob:
        a = RecordService(alice, models, "customer", Actor(uid, "en"))
        b = RecordService(bob, models, "customer", Actor(uid, "en"))
        opened_by_a = a.get(rid).version
        opened_by_b = b.get(rid).version
        alice.rollback()  # end the read transaction, as a request would
        bob.rollback()
        a.update(rid, {"contact_name": "Alice's edit"}, expected_version=opened_by_a)
        alice.commit()
        with pytest.raises(VersionConflict, match="someone else changed"):
            b.update(rid, {"contact_name": "Bob's edit"}, expected_version=opened_by_b)
        bob.rollback()
    with Session(engine) as s:
        obj = RecordService(s, models, "customer", Actor(uid)).get(rid)
        assert obj.contact_name == "Alice's edit" and obj.version == 2


def test_flush_level_race_is_caught_too(app):
    """Both sessions passed the version check; the database-level version guard still refuses one."""
    models, engine, uid, rid = _saved_customer(app)
    with Session(engine) as alice, Session(engine) as bob:
        b_obj = bob.get(models.model("customer"), rid)  # bob opens version 1
        a_obj = alice.get(models.model("customer"), rid)
        a_obj.contact_name = "first"
        alice.commit()
        b_svc = RecordService(bob, models, "customer", Actor(uid))
        b_obj.contact_name = "second"  # b_obj still carries version 1
        with pytest.raises(VersionConflict):
            b_svc._flush(b_obj)
    with Session(engine) as s:
        assert s.get(models.model("customer"), rid).contact_name == "first"
