"""Who asks is remembered across requests while the auth epoch holds (crm_meta.web.principals), and a
change of anyone's rights takes effect on the very next request — whoever made it: here with plain
SQL on a connection of its own, as a script or another worker would (database triggers move the
epoch, crm_meta.db.auth_epoch). SQLite and PostgreSQL."""
from __future__ import annotations

import secrets

import pytest
from sqlalchemy import event, text
from support import Api, login, sign_in

from crm_meta.db import auth_epoch


def _password() -> str:
    return secrets.token_urlsafe(12) + "a1"


class Shop:
    """Sales reps in `sales`, `sales_east` (under `sales`) and `service`, a manager of `sales`, and a
    customer of each rep (a record belongs to its owner's department)."""

    def __init__(self, app):
        from crm_meta.services.dictionaries import Dictionaries
        from crm_meta.services.members import set_member
        from crm_meta.services.records import Actor, RecordService
        from factories import api_record

        self.app, self.passwords, self.ids, self.customers = app, {}, {}, {}
        with app.app_context():
            b = app.extensions["crm"]
            sm, session = app.appbuilder.sm, b.db.session
            for name, role, dept in (("rep", "sales_rep", "sales"), ("other", "sales_rep", "service"),
                                     ("east", "sales_rep", "sales_east"),
                                     ("boss", "sales_manager", "sales")):
                pw = self.passwords[name] = _password()
                user = sm.add_user(name, name, "T", f"{name}@t.invalid", sm.find_role(role), pw)
                set_member(session, b.registry, b.models.system["member"], user.id, dept)
                self.ids[name] = user.id
            session.commit()
            dicts = Dictionaries.load(session, b.models.system["dict_item"])
            customer = b.registry.entity("customer")
            for name in ("rep", "other", "east"):
                body = api_record(customer, {}, self.ids[name], dicts)
                obj = RecordService(session, b.models, "customer", Actor(self.ids[name]), dicts).create(body)
                self.customers[name] = obj.id
            session.commit()
            self.engine = b.db.engine

    def api(self, name: str) -> Api:
        return sign_in(self.app, name, self.passwords[name])

    def sql(self, statement: str, **params) -> None:
        """Run ``statement`` on a connection of its own and commit (not through the app)."""
        with self.engine.connect() as conn:
            conn.execute(text(statement), params)
            conn.commit()

    def epoch(self) -> str:
        with self.engine.connect() as conn:
            return auth_epoch.read(conn)

    def listed(self, api: Api) -> set[int] | int:
        resp = api.get("/api/v1/customer/")
        return set(resp.json["ids"]) if resp.status_code == 200 else resp.status_code


@pytest.fixture
def shop(make_app) -> Shop:
    return Shop(make_app(CRM_DISABLED_PLUGINS="crm_lifecycle"))


def _statements(engine, call) -> list[str]:
    seen: list[str] = []
    listener = lambda *args: seen.append(" ".join(args[2].split()))  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return seen


WHO_TABLES = ("ab_user", "ab_role", "ab_permission", "ab_view_menu", "crm_member", "crm_dict_item")


def test_a_repeated_read_asks_the_database_nothing_about_who_asks(shop):
    """The first request of a user loads who they are; the next ones only run their own work."""
    for name in ("rep", "boss"):
        api = shop.api(name)
        first = _statements(shop.engine, lambda: api.get("/api/v1/customer/"))
        assert any(t in s for s in first for t in WHO_TABLES), first  # loaded once …
        again = _statements(shop.engine, lambda: api.get("/api/v1/customer/"))
        assert again and not [s for s in again if any(t in s for t in WHO_TABLES)], again  # … then remembered
        show = f"/api/v1/customer/{shop.customers['rep']}"
        api.get(show)  # the dictionaries' items, read by the first record page of this epoch
        one = _statements(shop.engine, lambda: api.get(show))
        assert not [s for s in one if any(t in s for t in WHO_TABLES)], one


def test_a_revoked_permission_refuses_the_next_request(shop):
    rep = shop.api("rep")
    assert shop.listed(rep) == {shop.customers["rep"]}
    grant = ("SELECT pvr.id FROM ab_permission_view_role pvr JOIN ab_role r ON r.id = pvr.role_id "
             "JOIN ab_permission_view pv ON pv.id = pvr.permission_view_id "
             "JOIN ab_permission p ON p.id = pv.permission_id JOIN ab_view_menu v ON v.id = pv.view_menu_id "
             "WHERE r.name = 'sales_rep' AND p.name = 'can_read' AND v.name = 'customer'")
    with shop.engine.connect() as conn:
        row = conn.execute(text(grant.replace("pvr.id", "pvr.id, pvr.permission_view_id, pvr.role_id"))).one()
    shop.sql("DELETE FROM ab_permission_view_role WHERE id = :id", id=row[0])
    assert shop.listed(rep) == 403
    assert rep.get(f"/api/v1/customer/{shop.customers['rep']}").status_code == 403
    shop.sql("INSERT INTO ab_permission_view_role (id, permission_view_id, role_id) VALUES (:id, :pv, :r)",
             id=row[0], pv=row[1], r=row[2])
    assert shop.listed(rep) == {shop.customers["rep"]}


def test_a_deactivated_user_is_refused_on_the_next_request(shop):
    rep = shop.api("rep")
    assert shop.listed(rep) == {shop.customers["rep"]}
    shop.sql("UPDATE ab_user SET active = :no WHERE id = :id", no=False, id=shop.ids["rep"])
    assert shop.listed(rep) == 401
    shop.sql("UPDATE ab_user SET active = :yes WHERE id = :id", yes=True, id=shop.ids["rep"])
    assert shop.listed(rep) == {shop.customers["rep"]}


def test_a_new_role_or_department_changes_what_the_next_request_sees(shop):
    boss = shop.api("boss")
    assert shop.listed(boss) == {shop.customers["rep"], shop.customers["east"]}  # department_tree of `sales`
    shop.sql("UPDATE crm_member SET department = 'service' WHERE user_id = :id", id=shop.ids["boss"])
    assert shop.listed(boss) == {shop.customers["other"]}  # now over `service`
    other = shop.api("other")
    assert shop.listed(other) == {shop.customers["other"]}  # own records only
    shop.sql("UPDATE ab_user_role SET role_id = (SELECT id FROM ab_role WHERE name = 'marketing') "
             "WHERE user_id = :id", id=shop.ids["other"])
    assert shop.listed(other) >= {shop.customers["rep"], shop.customers["other"]}  # marketing reads all


def test_a_moved_department_tree_changes_the_next_request(shop):
    """`sales_east` under `sales`: the manager of `sales` sees its records; moved out, no more."""
    boss = shop.api("boss")
    assert shop.listed(boss) == {shop.customers["rep"], shop.customers["east"]}
    shop.sql("UPDATE crm_dict_item SET attrs = :a WHERE dictionary = 'department' AND code = 'sales_east'",
             a='{"parent": null}')
    assert shop.listed(boss) == {shop.customers["rep"]}


def test_the_epoch_moves_with_rights_and_not_with_sign_ins(shop):
    before = shop.epoch()
    assert before
    shop.api("rep")  # a sign-in writes last_login and login_count: no one's rights changed
    assert shop.epoch() == before
    shop.sql("UPDATE ab_user SET first_name = 'Renamed' WHERE id = :id", id=shop.ids["rep"])
    assert shop.epoch() == before
    shop.sql("UPDATE ab_role SET name = 'sales_rep' WHERE name = 'sales_rep'")
    assert shop.epoch() != before


def test_a_browser_session_sees_a_revoked_permission_at_once(shop):
    browser = login(shop.app.test_client(), "rep", shop.passwords["rep"])
    assert browser.get("/customer/list/").status_code == 200
    shop.sql("DELETE FROM ab_permission_view_role WHERE role_id = (SELECT id FROM ab_role WHERE name = 'sales_rep') "
             "AND permission_view_id IN (SELECT pv.id FROM ab_permission_view pv "
             "JOIN ab_permission p ON p.id = pv.permission_id JOIN ab_view_menu v ON v.id = pv.view_menu_id "
             "WHERE p.name = 'can_read' AND v.name = 'customer')")
    assert browser.get("/customer/list/").status_code != 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_lost_trigger_is_put_back_at_the_next_start(make_app):
    app = make_app(CRM_DISABLED_PLUGINS="crm_lifecycle")
    with app.app_context():
        engine = app.extensions["crm"].db.engine
    name = auth_epoch.trigger_name("crm_member", "u")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP TRIGGER {name}")
        conn.commit()
    make_app(CRM_DISABLED_PLUGINS="crm_lifecycle")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                                    (name,)).scalar() == 1


def test_a_change_made_through_another_worker_is_seen_by_this_one(shop, make_app):
    """Two apps on one database, as two gunicorn workers: the admin deactivates a user on Flask-
    AppBuilder's user screen of one, the other refuses the user's token at its next request; the
    command line of the first moves the manager to another department, the second lists by it."""
    from support import ADMIN_PASSWORD, csrf_token

    worker = make_app(CRM_DISABLED_PLUGINS="crm_lifecycle")  # the second worker

    rep, boss = (sign_in(worker, name, shop.passwords[name]) for name in ("rep", "boss"))
    assert shop.listed(rep) == {shop.customers["rep"]}
    assert shop.listed(boss) == {shop.customers["rep"], shop.customers["east"]}

    admin = login(shop.app.test_client(), "admin", ADMIN_PASSWORD)
    url = f"/users/edit/{shop.ids['rep']}"
    form = {"first_name": "rep", "last_name": "T", "username": "rep", "email": "rep@t.invalid",
            "roles": [str(_role_id(shop, "sales_rep"))], "csrf_token": csrf_token(admin, url)}  # `active` unticked
    resp = admin.post(url, data=form)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    assert shop.listed(rep) == 401

    result = shop.app.test_cli_runner().invoke(args=["crm", "member", "boss", "service"])
    assert result.exit_code == 0, result.output
    assert shop.listed(boss) == {shop.customers["other"]}


def _role_id(shop, name: str) -> int:
    with shop.engine.connect() as conn:
        return conn.execute(text("SELECT id FROM ab_role WHERE name = :n"), {"n": name}).scalar()


def test_a_write_that_is_rolled_back_leaves_nothing_in_the_cache(shop):
    """A write request that changes a watched table and then reads rights (before its commit) must
    not keep what it read for others: the change may be rolled back, and the epoch would not move."""
    from crm_meta.web import context

    boss = shop.api("boss")
    assert shop.listed(boss) == {shop.customers["rep"], shop.customers["east"]}
    epoch = shop.epoch()
    app = shop.app
    with app.test_request_context("/api/v1/customer/", method="POST", environ_base={"crm.auth_epoch": epoch},
                                  headers=boss.headers):
        b = app.extensions["crm"]
        session = b.db.session
        session.execute(text("UPDATE crm_member SET department = 'service' WHERE user_id = :id"),
                        {"id": shop.ids["boss"]})
        b.auth.entries(epoch).clear()  # whatever the reads above cached: this write must load afresh
        assert context.policy().principal.department == "service"  # the write sees its own change …
        assert len(b.auth.entries(epoch)) == 0  # … and keeps none of it
        session.rollback()
    assert shop.epoch() == epoch
    assert shop.listed(boss) == {shop.customers["rep"], shop.customers["east"]}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_installs_in_two_schemas_keep_their_own_epoch(db_url):
    """PostgreSQL: a database shared by two installs in two schemas — each gets its own triggers and
    its changes move its own epoch, whatever the writer's search_path."""
    from sqlalchemy import create_engine

    base = create_engine(db_url)
    try:
        with base.begin() as conn:
            for schema in ("tenant_a", "tenant_b"):
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
                conn.exec_driver_sql(f"CREATE TABLE {schema}.crm_schema_state (key text PRIMARY KEY, value text)")
                conn.exec_driver_sql(f"CREATE TABLE {schema}.crm_member (user_id int PRIMARY KEY, department text)")
        engines = {s: create_engine(db_url, connect_args={"options": f"-csearch_path={s}"})
                   for s in ("tenant_a", "tenant_b")}
        for engine in engines.values():
            auth_epoch.install(engine)

        def epochs() -> dict[str, str]:
            with base.connect() as conn:
                return {s: conn.exec_driver_sql(f"SELECT value FROM {s}.crm_schema_state WHERE key = 'auth_epoch'")
                        .scalar() for s in engines}

        before = epochs()
        with engines["tenant_b"].begin() as conn:
            conn.exec_driver_sql("INSERT INTO crm_member VALUES (1, 'sales')")
        moved = epochs()
        assert moved["tenant_b"] != before["tenant_b"] and moved["tenant_a"] == before["tenant_a"]
        with base.begin() as conn:  # search_path public: the table named with its schema
            conn.exec_driver_sql("UPDATE tenant_a.crm_member SET department = 'x'")
            conn.exec_driver_sql("INSERT INTO tenant_a.crm_member VALUES (2, 'service')")
        after = epochs()
        assert after["tenant_a"] != moved["tenant_a"] and after["tenant_b"] == moved["tenant_b"]
        for engine in engines.values():
            engine.dispose()
    finally:
        base.dispose()
