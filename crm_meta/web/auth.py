"""Sign-in security: every attempt audited, accounts locked after repeated failures, failed attempts
rate-limited per client address, permission denials audited, a password policy for new passwords.

* ``AuthAuditMixin`` goes first in the bases of the security manager (crm_meta/web/security.py):
  its ``auth_user_db`` — used by the login form and by ``POST /api/v1/security/login`` — refuses a
  locked account before looking at the password, and records ``login`` / ``login_failed`` /
  ``login_locked`` in the audit trail (attempted name and client address included).
* Lockout: ``CRM_LOGIN_MAX_FAILURES`` (5) failed attempts for one account within
  ``CRM_LOGIN_LOCK_MINUTES`` (10) — counted from the audit trail, so it holds across workers —
  refuse that account, right password or not, until the window has passed. A success resets the count.
* Rate limit (Flask-Limiter, the limiter FAB creates): ``CRM_LOGIN_RATE_LIMIT`` failed sign-in
  attempts per client address on both login endpoints (shared); only failures count, so an office
  behind one address and a test suite signing in often are never throttled. FAB's own
  ``AUTH_RATE_LIMITED`` stays off: it counts every POST, successful ones included.
* ``register_auth(app, appbuilder)`` applies that limit and records 403 responses as ``denied``.
* ``password_problems`` / ``check_password``: at least 10 characters, letters and digits, not
  containing the username; FAB's user screens use it through ``FAB_PASSWORD_COMPLEXITY_VALIDATOR``
  and ``flask crm create-user`` calls it.
"""
from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

from flask import current_app, g, has_request_context, request
from flask_appbuilder.api import safe
from flask_appbuilder.exceptions import PasswordComplexityValidationError
from flask_appbuilder.security.api import SecurityApi as FabSecurityApi
from flask_appbuilder.security.views import AuthDBView as FabAuthDBView
from flask_appbuilder.views import expose
from sqlalchemy import select

from crm_meta.services import audit
from crm_meta.web.i18n import t

log = logging.getLogger("crm_meta.auth")

MIN_PASSWORD_LENGTH = 10


# -- password policy --------------------------------------------------------------------------------

def password_problems(password: str | None, username: str | None = None) -> list[tuple[str, str]]:
    """What is wrong with a new password, as (zh, en) messages; empty when it is acceptable."""
    password = password or ""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append((f"密码至少 {MIN_PASSWORD_LENGTH} 个字符", f"at least {MIN_PASSWORD_LENGTH} characters"))
    if not re.search(r"[^\W\d_]", password) or not re.search(r"\d", password):
        problems.append(("密码须同时包含字母和数字", "must contain both letters and digits"))
    name = (username or "").strip().lower()
    if len(name) >= 3 and name in password.lower():
        problems.append(("密码不能包含用户名", "must not contain the username"))
    return problems


def password_message(problems: list[tuple[str, str]], lang: str | None = None) -> str:
    """The problems in one language, or both ('zh / en') when ``lang`` is None (command line)."""
    if lang is None:
        return "; ".join(f"{zh} / {en}" for zh, en in problems)
    return ("; " if lang == "en" else "；").join(en if lang == "en" else zh for zh, en in problems)


def check_password(password: str | None, username: str | None = None) -> None:
    """Raise FAB's PasswordComplexityValidationError (shown under the field) when the policy refuses."""
    problems = password_problems(password, username)
    if problems:
        from crm_meta.web.i18n import current_lang

        raise PasswordComplexityValidationError(password_message(problems, current_lang()))


def _username_being_set() -> str | None:
    """Whose password a FAB screen or the users API is setting (the validator gets only the password)."""
    if not has_request_context():
        return None
    name = request.form.get("username")
    if not name and request.is_json:
        body = request.get_json(silent=True)
        name = body.get("username") if isinstance(body, dict) else None
    if name:
        return str(name)
    sm = current_app.appbuilder.sm
    pk = request.args.get("pk") or (request.view_args or {}).get("pk")
    if pk is not None and str(pk).isdigit():  # an admin resetting someone's password
        user = sm.get_user_by_id(int(pk))
        return getattr(user, "username", None)
    user = sm.current_user  # resetting one's own password
    return getattr(user, "username", None)


def fab_password_validator(password: str) -> None:
    """``FAB_PASSWORD_COMPLEXITY_VALIDATOR``: the policy with the username taken from the request."""
    check_password(password, _username_being_set())


# -- lockout ----------------------------------------------------------------------------------------

def max_failures() -> int:
    return int(current_app.config.get("CRM_LOGIN_MAX_FAILURES", 5))


def lock_minutes() -> int:
    return int(current_app.config.get("CRM_LOGIN_LOCK_MINUTES", 10))


def lockout_message() -> str:
    n = lock_minutes()
    return t(f"登录失败次数过多，请 {n} 分钟后再试", f"Too many failed sign-ins, try again in {n} minutes")


def is_locked(session: Any, system_tables: Any, account: str, now=None) -> bool:
    """True when ``account`` had max_failures failed attempts within the lock window, after its
    last successful sign-in (one indexed query on (action, at))."""
    t_ = system_tables["audit"]
    now = now or audit.utcnow()
    rows = session.execute(
        select(t_.c.action).where(t_.c.action.in_(("login", "login_failed")),
                                  t_.c.at >= now - timedelta(minutes=lock_minutes()),
                                  t_.c.username == account)
        .order_by(t_.c.at, t_.c.id)).scalars().all()
    failures = 0
    for action in rows:
        failures = 0 if action == "login" else failures + 1
    return failures >= max_failures()


class AuthDBView(FabAuthDBView):
    """FAB's login form; when the account is locked it says so instead of 'Invalid login'.

    Same class name as FAB's, so the endpoint stays ``AuthDBView.login``.
    """

    @property
    def invalid_login_message(self):  # FAB flashes this after a refused attempt
        if g.get("crm_login_locked"):
            return lockout_message()
        return FabAuthDBView.invalid_login_message


class SecurityApi(FabSecurityApi):
    """FAB's security API; a locked account's login answers 429 with the lockout message."""

    @expose("/login", methods=["POST"])
    @safe
    def login(self):
        response = super().login()
        if g.get("crm_login_locked"):
            return self.response(429, message=lockout_message())
        return response

    login.__doc__ = FabSecurityApi.login.__doc__


class AuthAuditMixin:
    """Mixed into the security manager before FAB's: audited, lockout-aware DB authentication."""

    authdbview = AuthDBView
    security_api = SecurityApi

    def _account(self, username: str) -> tuple[str, Any]:
        """(the account's username, the user) — or the tried name, lower-cased, and None."""
        user = self.find_user(username=username) or self.find_user(email=username)
        return (user.username, user) if user is not None else (username.strip().lower()[:256], None)

    def _audit_login(self, action: str, account: str, user: Any = None, **detail: Any) -> None:
        from crm_meta.web import context

        try:
            actor = replace(context.actor(), user_id=getattr(user, "id", None), username=account)
            build = context.build()
            audit.log_event(self.session, build.models.system, actor, action, detail=detail or None)
            self.session.commit()
        except Exception:  # noqa: BLE001 - auditing must not turn a sign-in into a 500
            log.exception("could not audit %s of %s", action, account)
            self.session.rollback()

    def auth_user_db(self, username, password):
        if username is None or username == "" or not has_request_context():
            return super().auth_user_db(username, password)
        from crm_meta.web import context

        account, known = self._account(str(username))
        if is_locked(self.session, context.build().models.system, account):
            g.crm_login_locked = g.crm_login_failed = True
            self._audit_login("login_locked", account)
            return None
        user = super().auth_user_db(username, password)
        if user:
            self._audit_login("login", account, user)
        else:
            g.crm_login_failed = True
            self._audit_login("login_failed", account, known)
        return user


# -- registration -------------------------------------------------------------------------------------

def _failed_login(_response) -> bool:
    return bool(g.get("crm_login_failed"))


def _rate_limit_message() -> str:
    return t("登录尝试过于频繁，请稍后再试", "Too many sign-in attempts from your address; try again later")


def register_auth(app, appbuilder) -> None:
    """Rate-limit failed sign-ins per client address on both login endpoints; audit 403 responses."""
    sm = appbuilder.sm
    limit = app.config.get("CRM_LOGIN_RATE_LIMIT")
    if limit and getattr(sm, "limiter", None) is not None:
        shared = sm.limiter.shared_limit(limit, scope="crm_login", methods=["POST"], deduct_when=_failed_login,
                                         error_message=_rate_limit_message)
        for view in appbuilder.baseviews:
            if view is sm.auth_view or isinstance(view, FabSecurityApi):
                if view.blueprint is not None:
                    shared(view.blueprint)
    app.after_request(_audit_denied)


def _audit_denied(response):
    """A 403 is recorded as ``denied`` (user, method, path, the screen's permission name)."""
    if response.status_code != 403:
        return response
    from crm_meta.web import context

    session = None
    try:
        build = context.build()
        session = context.session()
        session.rollback()  # whatever the refused request had pending is not ours to commit
        view = getattr(current_app.view_functions.get(request.endpoint or ""), "__self__", None)
        name = getattr(view, "class_permission_name", None)
        entity = name if name in build.models.models else None
        pk = (request.view_args or {}).get("pk")
        audit.log_event(session, build.models.system, context.actor(), "denied", entity=entity,
                        record_id=int(pk) if pk is not None and str(pk).isdigit() else None,
                        detail={"method": request.method, "path": request.path[:500],
                                "endpoint": request.endpoint, "view": name})
        session.commit()
    except Exception:  # noqa: BLE001 - the 403 goes out whatever happens here
        log.exception("could not audit a denied request")
        if session is not None:
            session.rollback()
    return response
