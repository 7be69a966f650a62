"""List counts: exact up to the cap; on a large PostgreSQL table, the planner's estimate is trusted only
when it is far above the cap (so a small scope is always counted exactly)."""
from __future__ import annotations

from sqlalchemy import text

from crm_meta.services import counting


def test_the_planner_is_trusted_only_far_above_the_cap(app, db_url):
    with app.app_context():
        b = app.extensions["crm"]
        session = b.db.session
        model = b.models.model("customer")
        admin = app.appbuilder.sm.find_user("admin").id
        table = model.__table__
        session.execute(table.insert(), [
            {"customer_no": f"C{i:06d}", "name": f"客户{i}", "customer_type": "prospect", "industry": "retail",
             "contact_name": "张三", "contact_phone": "13800000000", "region": "east" if i < 3 else "north",
             "owner_id": admin, "version": 1, "created_at": __import__("datetime").datetime(2026, 1, 1)}
            for i in range(400)])
        session.commit()
        if db_url.startswith("postgresql"):
            session.execute(text("ANALYZE customer"))
            session.commit()
        counting._sizes.clear()
        counting._plans.clear()
        everyone = session.query(model.id)
        few = session.query(model.id).filter(model.region.in_(["east", "south"]))  # an expanding IN
        on_pg = db_url.startswith("postgresql")
        # 400 rows, cap 20: the estimate (≈400) is ≥ 10 × 20, so "20+" without counting — on PostgreSQL.
        assert counting.above_cap(session, "customer", [everyone], cap=20) is on_pg
        # A scope of 3 rows is never estimated away, whatever the table's size.
        assert counting.above_cap(session, "customer", [few], cap=20) is False
        assert counting.capped_count(session, [few], cap=20) == 3
        # A cap the table is not 10 × larger than: exact counting, on both databases.
        assert counting.above_cap(session, "customer", [everyone], cap=100) is False
        assert counting.capped_count(session, [everyone], cap=100) == 100
        assert counting.capped_count(session, [everyone, few], cap=1000) == 403  # disjoint parts add up
        if on_pg:  # the same unfiltered list again: the planner's answer is reused, no EXPLAIN round trip
            from sqlalchemy import event

            seen = []
            engine = session.get_bind()
            listener = lambda *a: seen.append(a[2])  # noqa: E731 - statement text
            event.listen(engine, "before_cursor_execute", listener)
            try:
                assert counting.above_cap(session, "customer", [everyone], cap=20) is True
                assert counting.above_cap(session, "customer", [few], cap=20) is False
            finally:
                event.remove(engine, "before_cursor_execute", listener)
            assert not any(s.startswith("EXPLAIN") for s in seen), seen
