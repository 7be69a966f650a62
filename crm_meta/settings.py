"""Configuration: defaults here → the project's config.py → instance/config.py → CRM_* environment → test config."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _password_policy(password: str) -> None:
    """FAB_PASSWORD_COMPLEXITY_VALIDATOR (imported lazily: `crm check` reads this file without Flask-AppBuilder)."""
    from crm_meta.web.auth import fab_password_validator

    fab_password_validator(password)


DEFAULTS: dict[str, Any] = {
    "APP_NAME": "crm_meta CRM",
    "CRM_SCHEMA_PATH": str(PROJECT_ROOT / "schemas"),
    "AUTH_TYPE": 1,  # AUTH_DB
    "AUTH_ROLE_ADMIN": "admin",
    "AUTH_ROLE_PUBLIC": "public",
    "FAB_UPDATE_PERMS": False,  # the engine syncs permissions itself, set-based
    "FAB_SECURITY_MANAGER_CLASS": "crm_meta.web.security.CrmSecurityManager",
    "FAB_API_SWAGGER_UI": True,
    "FAB_BASE_TEMPLATE": "crm/base.html",
    "BABEL_DEFAULT_LOCALE": "zh",
    # Chinese for FAB texts its own catalogue leaves in English (merged over FAB's; see the .po file)
    "BABEL_TRANSLATION_DIRECTORIES": str(Path(__file__).resolve().parent / "web" / "translations"),
    "WTF_CSRF_ENABLED": True,
    "WTF_CSRF_TIME_LIMIT": None,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    # Set SESSION_COOKIE_SECURE / REMEMBER_COOKIE_SECURE to True in instance/config.py behind HTTPS.
    "REMEMBER_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    # Passwords set on FAB's user screens and by `crm create-user` (crm_meta/web/auth.py): at least
    # 10 characters, letters and digits, not containing the username.
    "FAB_PASSWORD_COMPLEXITY_ENABLED": True,
    "FAB_PASSWORD_COMPLEXITY_VALIDATOR": _password_policy,
    # Sign-in protection (crm_meta/web/auth.py): an account is locked after this many failed attempts
    # within this many minutes; failed attempts per client address are rate-limited (Flask-Limiter,
    # per worker process with the memory storage). FAB's AUTH_RATE_LIMITED stays off: it would count
    # successful sign-ins too, and a whole office often signs in from one address.
    "CRM_LOGIN_MAX_FAILURES": 5,
    "CRM_LOGIN_LOCK_MINUTES": 10,
    "CRM_LOGIN_RATE_LIMIT": "20 per 10 minute",
    "RATELIMIT_STORAGE_URI": "memory://",
    "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    "FAB_API_MAX_PAGE_SIZE": 100,
    "RATELIMIT_ENABLED": True,
    # Plugins (crm_meta/plugins.py): only these when set (comma list); never these; where bundled ones live.
    "CRM_PLUGINS": None,
    "CRM_DISABLED_PLUGINS": None,
    "CRM_PLUGIN_PATH": str(PROJECT_ROOT / "plugins"),
}

# CRM_* environment variables and the config keys they set.
ENVIRONMENT = {
    "CRM_DATABASE_URL": "SQLALCHEMY_DATABASE_URI",
    "CRM_SCHEMA_PATH": "CRM_SCHEMA_PATH",
    "CRM_SECRET_KEY": "SECRET_KEY",
    "CRM_ADMIN_PASSWORD": "CRM_ADMIN_PASSWORD",
    "CRM_PLUGINS": "CRM_PLUGINS",
    "CRM_DISABLED_PLUGINS": "CRM_DISABLED_PLUGINS",
    "CRM_PLUGIN_PATH": "CRM_PLUGIN_PATH",
}


def schema_paths(config) -> list[str]:
    value = config.get("CRM_SCHEMA_PATH") or DEFAULTS["CRM_SCHEMA_PATH"]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [p for p in str(value).split(os.pathsep) if p]


def _secret_key(instance: Path) -> str:
    """A per-installation random key kept in instance/secret_key (never a fixed default)."""
    path = instance / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def configure(app: Flask, test_config: dict | None) -> None:
    app.config.update(DEFAULTS)
    project_config = PROJECT_ROOT / "config.py"
    if project_config.exists():
        app.config.from_pyfile(str(project_config))
    app.config.from_pyfile("config.py", silent=True)  # instance/config.py
    for env, key in ENVIRONMENT.items():
        if os.environ.get(env):
            app.config[key] = os.environ[env]
    if test_config:
        app.config.update(test_config)
    instance = Path(app.instance_path)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        instance.mkdir(parents=True, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{instance / 'crm.db'}"
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(instance)
    from crm_meta.db.engine import engine_options
    from crm_meta.web.i18n import LANGUAGES

    app.config.setdefault("LANGUAGES", LANGUAGES)
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(app.config["SQLALCHEMY_DATABASE_URI"]))
