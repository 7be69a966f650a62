"""create_app: load the dictionary, build tables and migrate, register generated screens and APIs."""
from __future__ import annotations

import gc
import sys
from contextlib import contextmanager
from pathlib import Path

from flask import Flask, request
from flask_appbuilder import AppBuilder
from flask_appbuilder.models.sqla.base import SQLA
from flask_appbuilder.security.sqla.models import User
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from crm_meta.db.tables import ModelSet, build_models
from crm_meta.errors import CrmError, MigrationError, PluginError, SchemaErrors
from crm_meta.metadata.model import Label, Registry
from crm_meta.plugins import Plugins, load_plugins
from crm_meta.schema import load_registry
from crm_meta.settings import PROJECT_ROOT, configure, schema_paths
from crm_meta.web.context import Build
from crm_meta.web.i18n import lazy
from crm_meta.web.json_provider import OrjsonProvider

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Flask-AppBuilder's templates (base layout, list/search widgets, Swagger UI) carry inline
    # <script> blocks and style attributes, so scripts and styles need 'unsafe-inline'; our own
    # templates have no inline script. Everything else is served by the app itself.
    "Content-Security-Policy": "; ".join((
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    )),
}


@contextmanager
def _gc_paused():
    """The build allocates many long-lived objects (classes, tables, routes); the cyclic collector
    scanning them over and over cost a quarter of start-up time (bench/startup.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def create_app(test_config: dict | None = None) -> Flask:
    """The CRM app; refuses to start (exit 1, every error printed) on an invalid data dictionary."""
    with _gc_paused():
        app = _create_app(test_config)
        settled = {**app.config, "INSTANCE_PATH": app.instance_path}
        from crm_meta.web.live import install

        # Each worker rebuilds the app from the same settings when an admin changes the dictionary.
        install(app, lambda: _rebuild(settled))
        if not app.config.get("TESTING"):
            # The build's long-lived objects move to the permanent generation: the first full
            # collections after start-up no longer scan ~700,000 objects (0.4–1.5 s pauses seen in
            # bench/policy.py). Not in tests, which build many apps in one process.
            gc.freeze()
        return app


def _rebuild(settled: dict) -> Flask:
    """A new app for the current dictionary (crm_meta.web.live swaps it in)."""
    with _gc_paused():
        return _create_app(dict(settled))


def _create_app(test_config: dict | None) -> Flask:
    app = Flask("crm_meta.web", instance_path=str(Path(
        (test_config or {}).get("INSTANCE_PATH") or PROJECT_ROOT / "instance")))
    app.json = OrjsonProvider(app)
    configure(app, test_config)
    try:
        plugins = load_plugins(app.config)
    except PluginError as exc:
        print(f"crm_meta: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        from crm_meta.services.schema_changes import startup_overlay

        overlay = startup_overlay(app.config["SQLALCHEMY_DATABASE_URI"], app.config.get("SQLALCHEMY_ENGINE_OPTIONS"))
        registry = load_registry(schema_paths(app.config) + plugins.schema_paths(), overlay, plugins.field_types())
    except SchemaErrors as exc:
        print(f"crm_meta: the data dictionary is invalid:\n{exc.report()}", file=sys.stderr)
        for line in plugin_blame(plugins, exc):
            print(f"crm_meta: {line}", file=sys.stderr)
        if any(i.location.path.startswith("overlay/") for i in exc.issues):
            print("crm_meta: overlay/… is what admins changed on screen, stored in the database: write it out with "
                  "`flask --app app crm schema export DIR`, correct it, and load it back with "
                  "`flask --app app crm schema import DIR`", file=sys.stderr)
        raise SystemExit(1) from None
    except SQLAlchemyError as exc:
        print(f"crm_meta: cannot start: cannot read the database: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        init_app(app, registry, plugins)
    except MigrationError as exc:
        off = [i.name for i in plugins.infos if not i.enabled and not i.error]
        hint = (f"\nIf these came from a plugin that is now turned off ({', '.join(off)}), enable it again: "
                "the fields a plugin added stay in the database.") if off else ""
        print(f"crm_meta: cannot start: {exc}{hint}", file=sys.stderr)
        raise SystemExit(1) from None
    except CrmError as exc:
        print(f"crm_meta: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    return app


def plugin_blame(plugins: Plugins, exc: SchemaErrors) -> list[str]:
    """One line per plugin whose dictionary files have errors (the issue lines name files only)."""
    files: dict[str, list[str]] = {}
    for issue in exc.issues:
        name = plugins.plugin_of_path(issue.location.path)
        if name and issue.location.path not in files.setdefault(name, []):
            files[name].append(issue.location.path)
    return [f"plugin '{name}' contributed the invalid file(s) {', '.join(paths)}; fix them or turn the "
            f"plugin off (CRM_DISABLED_PLUGINS={name})" for name, paths in files.items()]


def init_app(app: Flask, registry: Registry, plugins: Plugins | None = None) -> None:
    """Build tables, migrate, register screens and APIs (and the plugins' views) on ``app``."""
    plugins = plugins if plugins is not None else load_plugins(app.config)
    from crm_meta.web.dashboard import DashboardView

    db = SQLA()
    db.init_app(app)
    csrf = CSRFProtect(app)
    with app.app_context():
        appbuilder = AppBuilder(update_perms=False, indexview=DashboardView)
        appbuilder.init_app(app, db.session)
        from crm_meta.web.i18n import install_locale_selector

        install_locale_selector(app)
        from crm_meta.services.sla import computed_columns

        models = build_models(registry, User, computed=computed_columns)
        models.plugins = plugins
        build = app.extensions["crm"] = Build(models, db)
        from crm_meta.services.schema_sync import sync_schema

        sync_schema(db.engine, models)
        _register(appbuilder, models)
        from crm_meta.web.audit_views import register_audit

        register_audit(appbuilder, app)  # audit/alerts screens, append-only triggers, sign-in protection
        from crm_meta.web.customer360 import register_customer360; register_customer360(appbuilder)  # noqa: E702
        from crm_meta.web.dictionary_admin import register_dictionary_admin; register_dictionary_admin(appbuilder)  # noqa: E702,E501
        from crm_meta.web.schema_admin import register_schema_admin; register_schema_admin(appbuilder)  # noqa: E702
        plugins.register_views(appbuilder, build)
        from crm_meta.web.permissions import sync_permissions

        for attempt in range(3):  # another worker may be adding the same permissions right now
            try:
                sync_permissions(db.session, appbuilder, app.config["AUTH_ROLE_ADMIN"], models.system["state"],
                                 registry)
                break
            except IntegrityError:
                db.session.rollback()
                if attempt == 2:
                    raise
        db.session.remove()
        from crm_meta.db import auth_epoch

        auth_epoch.install(db.engine)  # the triggers behind the per-epoch auth cache (crm_meta.web.principals)
    from crm_meta.cli import crm

    app.cli.add_command(crm)
    from crm_meta.web.openapi import scope_openapi

    scope_openapi(app)
    _protect_api_writes(app, csrf)
    app.after_request(_security_headers)
    from crm_meta.web.errors import install_error_pages

    install_error_pages(app)
    from crm_meta.web.forms import user_name

    app.add_template_filter(user_name, "crm_person")  # the navbar's user menu (templates/appbuilder/)
    from crm_meta.web.i18n import current_lang

    app.add_template_global(current_lang, "crm_lang")  # crm/base.html: the page's language for crm.js


def _register(appbuilder: AppBuilder, models: ModelSet) -> None:
    from crm_meta.web.api import make_api
    from crm_meta.web.views import LookupView, make_view

    registry = models.registry
    for entity in registry.entities:
        menu = registry.menu(entity.menu) if entity.menu else None
        appbuilder.add_view(
            make_view(entity, models), entity.name, label=lazy(entity.label), icon="fa-table",
            category=menu.name if menu else "", category_label=lazy(menu.label) if menu else "",
            category_icon=(menu.icon or "fa-folder") if menu else "")
        appbuilder.add_api(make_api(entity, models))
    appbuilder.add_view_no_menu(LookupView)
    from crm_meta.web.approvals import ApprovalsApi, ApprovalsView

    appbuilder.add_view(ApprovalsView, "approvals", label=lazy(Label("审批", "Approvals")), icon="fa-check-square-o")
    appbuilder.add_api(ApprovalsApi)
    from crm_meta.web.board import register_boards

    register_boards(appbuilder, registry)


def _protect_api_writes(app: Flask, csrf: CSRFProtect) -> None:
    """REST writes authenticated by the session cookie must carry the CSRF token like forms do."""

    @app.before_request
    def _csrf_for_cookie_api_writes():
        if request.path.startswith("/api/") and request.method not in ("GET", "HEAD", "OPTIONS"):
            if not request.headers.get("Authorization") and request.cookies.get(
                    app.config.get("SESSION_COOKIE_NAME", "session")):
                csrf.protect()


def _security_headers(response):
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response
