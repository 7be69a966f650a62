"""Shared pytest fixtures.

Layout of this file (keep it in this order, append new sections at the end):

1. Infrastructure (this block): databases, live HTTP server, browser launch.
     pg_server                  session   throwaway PostgreSQL cluster (started lazily)
     db_url                     function  fresh empty DB URL, parametrized [sqlite, postgresql]
     live_server                function  factory: live_server(wsgi_app) -> "http://127.0.0.1:PORT"
     browser_type_launch_args   session   pytest-playwright override: use the system Chromium
2. Application fixtures (added by the app authors below).

Useful selections: ``-k sqlite`` / ``-k postgresql`` pick one database backend,
``-m "not browser"`` skips the Chromium tests.  Missing PostgreSQL binaries or Chromium are
reported as errors telling you to run ``make install`` — they are never silently skipped.
"""

from __future__ import annotations

import itertools
import os
import secrets
import re
import threading

import pytest
from werkzeug.serving import make_server

from pgserver import PgServer  # tests/ is on sys.path (rootdir-relative conftest import)

# ============================================================================================
# 1. Infrastructure
# ============================================================================================

# -- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL cluster for the whole session (≈1-2 s to start).

    Yields a :class:`pgserver.PgServer`; use ``pg_server.create_database(name) -> url`` and
    ``pg_server.drop_database(name)`` for databases beyond what ``db_url`` gives you.
    Only started when some test actually needs it (``db_url[postgresql]`` requests it lazily).
    """
    server = PgServer().start()  # raises PgServerError ("run make install") if binaries missing
    try:
        yield server
    finally:
        server.stop()


_db_counter = itertools.count(1)


def _pg_dbname(nodename: str) -> str:
    """A unique, valid (<= 63 bytes) database name derived from the test's name."""
    slug = re.sub(r"[^a-z0-9]+", "_", nodename.lower()).strip("_")
    return f"t{next(_db_counter):04d}_{slug}"[:63]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """SQLAlchemy URL of a fresh, empty database — one per test, for each backend.

    * ``sqlite``: ``sqlite:////<tmp_path>/test.db`` (the file does not exist yet).
    * ``postgresql``: ``postgresql+psycopg://postgres@127.0.0.1:PORT/<name>``, a new database on
      the session's ``pg_server``, dropped (connections kicked) after the test.

    The PostgreSQL server is requested via ``getfixturevalue`` so that sessions that only run
    the sqlite variants never start it. Dispose of your engines at the end of the test anyway.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return

    server = request.getfixturevalue("pg_server")
    name = _pg_dbname(request.node.name)
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


# -- Live HTTP server (for browser tests) --------------------------------------------------------


@pytest.fixture
def live_server():
    """Factory: ``base_url = live_server(flask_app)`` serves any WSGI app on 127.0.0.1.

    Each call starts ``werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)`` on a
    free port in a daemon thread and returns ``"http://127.0.0.1:PORT"`` (no trailing slash).
    All servers started by the test are shut down at teardown.
    """
    started: list[tuple[object, threading.Thread]] = []

    def serve(app) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="live_server", daemon=True)
        thread.start()
        started.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield serve

    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- Browser (pytest-playwright) -----------------------------------------------------------------

CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args, browser_name):
    """Launch Debian's Chromium (``$CHROMIUM_PATH``, default /usr/bin/chromium).

    Playwright cannot download its own browsers here. Headless as root needs no extra flags
    (Playwright passes --no-sandbox itself). Use pytest-playwright's ``page``/``browser``
    fixtures as usual; ``--headed``, ``--screenshot on``, ``--tracing on`` still work.
    """
    if browser_name != "chromium":  # --browser firefox/webkit: leave Playwright's defaults
        return browser_type_launch_args
    if not os.access(CHROMIUM_PATH, os.X_OK):
        raise RuntimeError(
            f"Chromium not found at {CHROMIUM_PATH!r} (set CHROMIUM_PATH). "
            "Run `make install` (apt-get install chromium)."
        )
    return {**browser_type_launch_args, "executable_path": CHROMIUM_PATH}


# ============================================================================================
# 2. Application fixtures
# ============================================================================================

from support import ADMIN_PASSWORD, Api, csrf_token, login, sign_in  # noqa: F401  (re-exported)


@pytest.fixture
def make_app(db_url, tmp_path):
    """Build the CRM on the test's database; ``make_app(schema_dir)`` for another dictionary."""
    from app import create_app

    made = []

    def make(schema_path=None, **config):
        cfg = {
            "SQLALCHEMY_DATABASE_URI": db_url,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": secrets.token_hex(16),
            "TESTING": True,
            "CRM_ADMIN_PASSWORD": ADMIN_PASSWORD,
            **config,
        }
        if schema_path is not None:
            cfg["CRM_SCHEMA_PATH"] = str(schema_path)
        app = create_app(cfg)
        with app.app_context():
            from crm_meta.cli import ensure_admin

            ensure_admin(ADMIN_PASSWORD)
        made.append(app)
        return app

    yield make
    from crm_meta.web.live import shutdown

    for app in made:
        shutdown(app)  # every schema generation it served: sessions, pools, mapper links


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    """A browser-like test client logged in as the admin."""
    return login(app.test_client())


@pytest.fixture
def api(app):
    return sign_in(app)
