"""Live schema swap: every worker process serves the newest data dictionary from its next request on.

A schema apply bumps ``schema_generation`` in ``crm_schema_state`` in the same transaction as the DDL
and the overlay. Each request first reads that number (one primary-key lookup); when it moved, this
worker builds a complete new app for the new dictionary — tables, screens, REST, OpenAPI — and swaps
it in with one reference assignment. Requests already running finish on the app they started on, so
no request ever sees a half-built app; a failed build leaves the old app serving and is retried.
Sessions and CSRF tokens are signed with the same secret key, so a form opened before the change
still saves after it.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Callable

from flask import Flask
from sqlalchemy import select
from sqlalchemy.engine import Engine

from crm_meta.services.schema_changes import GENERATION_KEY, STATE

log = logging.getLogger(__name__)
RETRY_SECONDS = 5.0


class LiveApp:
    """The WSGI callable of the root app: forwards each request to the newest generation's app."""

    def __init__(self, root: Flask, engine: Engine, build: Callable[[], Flask]):
        self.root = root
        self.engine = engine
        self.build = build
        self.app = root
        self.wsgi = root.wsgi_app  # the root's own Flask.wsgi_app (bound), saved before we replace it
        self.generation = self.read_generation()
        self.lock = threading.Lock()
        self.failed_at: dict[int, float] = {}
        self.swaps = 0

    def read_generation(self) -> int:
        try:
            with self.engine.connect() as conn:
                value = conn.execute(select(STATE.c.value).where(STATE.c.key == GENERATION_KEY)).scalar()
            return int(value or 0)
        except Exception:  # the database is briefly unavailable: keep serving what we have
            log.warning("crm_meta: could not read the schema generation", exc_info=True)
            return self.generation if hasattr(self, "generation") else 0

    def __call__(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith("/static/"):
            seen = self.read_generation()
            if seen != self.generation:
                self.swap(seen)
        return self.wsgi(environ, start_response)

    def swap(self, seen: int) -> None:
        with self.lock:
            if seen == self.generation:
                return  # another thread of this worker swapped meanwhile
            failed = self.failed_at.get(seen)
            if failed is not None and time.monotonic() - failed < RETRY_SECONDS:
                return
            started = time.perf_counter()
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                new = self.build()
            except BaseException as exc:  # SystemExit from a refused dictionary included
                self.failed_at[seen] = time.monotonic()
                log.error("crm_meta: could not build schema generation %s; still serving generation %s: %s",
                          seen, self.generation, exc)
                return
            finally:
                if was_enabled:
                    gc.enable()
            old = self.app
            self.app, self.wsgi, self.generation = new, new.wsgi_app, seen
            self.swaps += 1
            new.extensions["crm_live"] = self
            log.info("crm_meta: serving schema generation %s (built in %.0f ms)", seen,
                     (time.perf_counter() - started) * 1000)
            if old is not self.root:
                _retire(old)


def _retire(app: Flask) -> None:
    """Close the old generation's idle connections; ones still in use close when their request ends."""
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
