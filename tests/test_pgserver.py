"""Tests of the test infrastructure itself (tests/conftest.py, tests/pgserver.py).

* ``db_url`` gives a working, empty database on both backends, and a new one per test.
* PostgreSQL databases are really dropped after their test.
* The browser stack works: live_server + pytest-playwright + system Chromium.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import make_url

# URLs handed out by db_url so far in this session (to check each test gets its own database).
_seen_urls: list[str] = []


def _probe_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "probe",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
    )


def test_db_url_is_a_working_empty_database(db_url, request):
    backend = request.node.callspec.params["db_url"]
    engine = sa.create_engine(db_url)
    try:
        assert engine.dialect.name == backend
        assert sa.inspect(engine).get_table_names() == []

        metadata = sa.MetaData()
        probe = _probe_table(metadata)
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(probe.insert(), [{"name": "Ada"}, {"name": "Zoë"}])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(probe.c.name).order_by(probe.c.id)).scalars().all()
        assert rows == ["Ada", "Zoë"]  # non-ASCII round-trips (UTF8 cluster)
    finally:
        engine.dispose()
    _seen_urls.append(db_url)


def test_databases_are_isolated_between_tests(db_url):
    # A new database every time: never a URL handed out before, and none of the tables the
    # previous test created (it ran first, for both backends, and created "probe").
    assert db_url not in _seen_urls
    engine = sa.create_engine(db_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        metadata = sa.MetaData()
        _probe_table(metadata)
        metadata.create_all(engine)  # would fail if "probe" leaked in from another test
    finally:
        engine.dispose()
    _seen_urls.append(db_url)


def test_postgresql_databases_are_dropped_after_their_test(pg_server):
    # Runs after the two tests above: their per-test PostgreSQL databases must be gone.
    earlier = {make_url(u).database for u in _seen_urls if u.startswith("postgresql")}
    live = set(pg_server.list_databases())
    assert not (earlier & live)

    # And the helpers work directly, including dropping a database that has open connections.
    url = pg_server.create_database("adhoc_probe")
    assert url == f"postgresql+psycopg://postgres@127.0.0.1:{pg_server.port}/adhoc_probe"
    engine = sa.create_engine(url)
    conn = engine.connect()  # left open on purpose
    assert conn.execute(sa.text("select current_database()")).scalar() == "adhoc_probe"
    pg_server.drop_database("adhoc_probe")
    assert "adhoc_probe" not in pg_server.list_databases()
    engine.dispose()


# -- browser smoke test --------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>smoke</title></head>
<body>
  <p id="msg">waiting</p>
  <button id="go" onclick="document.getElementById('msg').textContent = 'clicked ' + location.pathname">
    Click me
  </button>
</body></html>"""


@pytest.mark.browser
def test_browser_smoke(live_server, page, tmp_path):
    from playwright.sync_api import expect

    app = Flask("smoke")
    app.add_url_rule("/hello", "hello", lambda: _PAGE)
    base_url = live_server(app)

    page.goto(f"{base_url}/hello")
    expect(page).to_have_title("smoke")
    expect(page.locator("#msg")).to_have_text("waiting")
    page.get_by_role("button", name="Click me").click()
    expect(page.locator("#msg")).to_have_text("clicked /hello")  # set by JS in the browser

    shot = tmp_path / "smoke.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
