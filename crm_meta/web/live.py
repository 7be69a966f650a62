"""Live schema swap: every worker process serves the newest data dictionary from its next request on.

A schema apply bumps ``schema_generation`` in ``crm_schema_state`` in the same transaction as the DDL
and the overlay. Each request first reads that number (one primary-key lookup, which also brings the
auth epoch of ``crm_meta.web.principals`` along in the WSGI environ); when it moved, this
worker builds a complete new app for the new dictionary — tables, screens, REST, OpenAPI — and swaps
it in with one reference assignment. Requests already running finish on the app they started on, so
no request ever sees a half-built app; a failed build leaves the old app serving and is retried.
Sessions and CSRF tokens are signed with the same secret key, so a form opened before the change
still saves after it.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import Callable

from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from crm_meta.db import auth_epoch
from crm_meta.services.schema_changes import GENERATION_KEY
from crm_meta.web.principals import ENVIRON_KEY

log = logging.getLogger(__name__)
RETRY_SECONDS = 5.0
GENERATION_HEADER = "X-CRM-Schema-Generation"
# the schema generation and the auth epoch (crm_meta.web.principals) in one primary-key lookup
STATE_SQL = (f"SELECT key, value FROM crm_schema_state "
             f"WHERE key IN ('{GENERATION_KEY}', '{auth_epoch.KEY}')")


class LiveApp:
    """The WSGI callable of the root app: forwards each request to the newest generation's app."""

    def __init__(self, root: Flask, engine: Engine, build: Callable[[], Flask]):
        self.root = root
        self.build = build
        self.app = root
        self.local = threading.local()
        self.check_engine = create_engine(engine.url, poolclass=NullPool,
                                          **({"connect_args": {"check_same_thread": False}}
                                             if engine.dialect.name == "sqlite" else {}))
        # (wsgi callable, its generation): one tuple, so the app and its generation always match. The
        # root's own Flask.wsgi_app (bound) is saved before install() replaces it.
        self.current = (root.wsgi_app, 0)  # (read_generation falls back to the generation served)
        self.current = (root.wsgi_app, self.read_state()[0])
        self.lock = threading.Lock()
        self.failed_at: dict[int, float] = {}
        self.swaps = 0

    @property
    def generation(self) -> int:
        return self.current[1]

    def read_generation(self) -> int:
        return self.read_state()[0]

    def read_state(self) -> tuple[int, str | None]:
        """(schema generation, auth epoch): one primary-key lookup on a connection this thread keeps
        (autocommit: no pool checkout, no pre-ping, no transaction to end — one round trip on
        PostgreSQL, microseconds on SQLite). The epoch is None when it cannot be read."""
        held = getattr(self.local, "held", None)
        try:
            if held is None or held[0] != os.getpid():  # new thread, or a worker forked after --preload
                held = self.local.held = (os.getpid(), self._connect())
            cursor = held[1].driver_connection.cursor()
            try:
                cursor.execute(STATE_SQL)
                values = dict(cursor.fetchall())
            finally:
                cursor.close()
            generation = values.get(GENERATION_KEY)
            return (int(generation) if generation is not None else 0), values.get(auth_epoch.KEY)
        except Exception:  # the database is briefly unavailable: keep serving what we have
            self.local.held = None
            log.warning("crm_meta: could not read the schema generation", exc_info=True)
            return self.generation, None

    def _connect(self):
        fairy = self.check_engine.raw_connection()  # kept: the pool closes the connection when it goes
        conn = fairy.driver_connection
        if hasattr(conn, "autocommit") and not isinstance(conn, sqlite3.Connection):
            conn.autocommit = True  # psycopg: a plain SELECT would otherwise open a transaction
        return fairy

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/static/"):
            return self.current[0](environ, start_response)
        seen, epoch = self.read_state()
        if seen != self.generation:
            self.swap(seen)
        if epoch is not None:
            environ[ENVIRON_KEY] = epoch
        wsgi, served = self.current
        served = str(served)

        def start(status, headers, exc_info=None):
            headers.append((GENERATION_HEADER, served))  # which dictionary answered (clients may re-read _info)
            return start_response(status, headers, exc_info)

        return wsgi(environ, start)

    def swap(self, seen: int) -> None:
        with self.lock:
            if seen == self.generation:
                return  # another thread of this worker swapped meanwhile
            failed = self.failed_at.get(seen)
            if failed is not None and time.monotonic() - failed < RETRY_SECONDS:
                return
            started = time.perf_counter()
            try:
                new = self.build()
            except BaseException as exc:  # SystemExit from a refused dictionary included
                self.failed_at[seen] = time.monotonic()
                log.error("crm_meta: could not build schema generation %s; still serving generation %s: %s",
                          seen, self.generation, exc)
                return
            old = self.app
            self.app, self.current = new, (new.wsgi_app, seen)
            self.swaps += 1
            new.extensions["crm_live"] = self
            log.info("crm_meta: serving schema generation %s (built in %.0f ms)", seen,
                     (time.perf_counter() - started) * 1000)
            if old is not self.root:
                release(old)


def release(app: Flask) -> None:
    """Let an app that no longer serves go: unlink its mapped classes from Flask-AppBuilder's user mapper (a
    relationship across two SQLAlchemy registries makes the user's registry hold ours for good) and
    close its idle connections; requests still running on it finish normally."""
    crm = app.extensions.get("crm")
    registry = getattr(getattr(getattr(crm, "models", None), "base", None), "registry", None)
    if registry is not None:  # SQLAlchemy internals: no public API unlinks one registry from another
        for dependency in list(registry._dependencies):
            dependency._dependents.discard(registry)
            for mapper in dependency.mappers:  # many-to-one links to users add a processor to the user mapper
                mapper._dependency_processors[:] = [
                    p for p in mapper._dependency_processors
                    if getattr(getattr(p, "parent", None), "registry", None) is not registry]
    sqla = app.extensions.get("sqlalchemy")
    if sqla is None:
        return
    with app.app_context():
        try:
            sqla.engine.dispose()
        except Exception:  # pragma: no cover - best effort
            pass


def install(root: Flask, build: Callable[[], Flask]) -> LiveApp:
    with root.app_context():
        engine = root.extensions["sqlalchemy"].engine
    live = LiveApp(root, engine, build)
    root.wsgi_app = live  # Flask.__call__ → live → the current generation's wsgi_app
    root.extensions["crm_live"] = live
    return live


def current(app: Flask) -> Flask:
    """The app serving requests now (``app`` itself until the first swap)."""
    live = app.extensions.get("crm_live")
    return live.app if live else app


def shutdown(app: Flask) -> None:
    """Release every generation of ``app`` and close its connections (tests, embedding)."""
    live = app.extensions.get("crm_live")
    apps = [app] + ([live.app] if live and live.app is not app else [])
    if live is not None:
        held = getattr(live.local, "held", None)
        if held is not None:
            try:
                held[1].close()
            except Exception:  # pragma: no cover - already gone
                pass
            live.local.held = None
        live.check_engine.dispose()
    for each in apps:
        release(each)
        crm = each.extensions.get("crm")
        if crm is not None:
            with each.app_context():
                crm.db.session.remove()
