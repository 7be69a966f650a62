"""FAB's security manager with permissions resolved once per request instead of once per check."""
from __future__ import annotations

import functools
import logging

from flask import current_app, g, has_request_context, request
from flask_appbuilder.const import LOGMSG_ERR_SEC_ACCESS_DENIED, PERMISSION_PREFIX
from flask_appbuilder.security.decorators import protect as fab_protect
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.sqla.models import (
    Permission,
    PermissionView,
    Role,
    ViewMenu,
    assoc_permissionview_role,
)
from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import joinedload

from crm_meta.web.auth import AuthAuditMixin
from crm_meta.web.principals import Who, bearer_claims, reading, who_of

log = logging.getLogger(__name__)


def _roles_key(role_ids) -> str:
    return "roles:" + ",".join(map(str, sorted(set(role_ids))))


def _bearer() -> bool:
    return has_request_context() and request.headers.get("Authorization", "").startswith("Bearer ")


def _jwt_user():
    """The user of the request's bearer token, or None when there is no valid one."""
    from flask_jwt_extended import get_current_user, verify_jwt_in_request

    try:
        verify_jwt_in_request()
        return get_current_user()
    except Exception:  # noqa: BLE001 — an invalid, expired or malformed token signs nobody in
        return None


def protect(allow_browser_login: bool = False):
    """FAB's ``protect`` verifying a bearer token once per request.

    FAB's decorator verifies the token (decode, signature, user lookup) itself and then again
    through ``has_access`` → ``current_user``; here the user found by ``current_user`` (one
    verification, kept on ``flask.g``) is the verification. The checks and their order are FAB's:
    the method's permission must be one of the class's, a public permission needs no token, an API
    key is FAB's business, a missing, invalid or expired token raises flask_jwt_extended's error
    (401), a valid one without the permission answers 403. Requests without a bearer token go
    through FAB's decorator unchanged.
    """

    def _protect(f):
        fab = fab_protect(allow_browser_login)(f)

        def wraps(self, *args, **kwargs):
            if not _bearer() or current_app.config.get("FAB_API_KEY_ENABLED", False):
                return fab(self, *args, **kwargs)
            permission_str = f"{PERMISSION_PREFIX}{f._permission_name}"
            if self.method_permission_name:
                _permission_name = self.method_permission_name.get(f.__name__)
                if _permission_name:
                    permission_str = f"{PERMISSION_PREFIX}{_permission_name}"
            class_permission_name = self.class_permission_name
            if permission_str not in self.base_permissions:
                return self.response_403()
            sm = current_app.appbuilder.sm
            sm.preload_view(class_permission_name)  # one view's grants: what this call checks
            if sm.is_item_public(permission_str, class_permission_name):
                return f(self, *args, **kwargs)
            who = sm.bearer_who()  # a read with a valid token of a known user, from the auth cache
            if who is not None:
                if sm.has_access(permission_str, class_permission_name):
                    return f(self, *args, **kwargs)
                log.warning(LOGMSG_ERR_SEC_ACCESS_DENIED, permission_str, class_permission_name)
                return self.response_403()
            if sm.current_user is None:  # no valid token: let flask_jwt_extended say why (401)
                from flask_jwt_extended import verify_jwt_in_request

                verify_jwt_in_request()
            if sm.has_access(permission_str, class_permission_name):
                return f(self, *args, **kwargs)
            log.warning(LOGMSG_ERR_SEC_ACCESS_DENIED, permission_str, class_permission_name)
            return self.response_403()

        return functools.update_wrapper(wraps, fab)

    return _protect


class BearerFirstApi:
    """Mixed into every REST API class: the session cookie signs in only requests without an
    Authorization header; a token, when sent, is the identity (FAB let the cookie win — FAB_NOTES
    leak 6)."""

    @property
    def allow_browser_login(self) -> bool:
        return not (has_request_context() and request.headers.get("Authorization"))


class ScreenApi(BearerFirstApi):
    """Mixed into the REST APIs of the admin screens (dictionaries, schema): documented in the OpenAPI
    document only for callers whose role may read the screen's permission, with the component
    schemas of ``component_schemas`` (name → JSON schema) registered once."""

    component_schemas: dict = {}

    def add_api_spec(self, api_spec) -> None:
        """Documented only to callers who may use it (the document is built per request)."""
        if self.appbuilder.sm.has_access("can_read", self.class_permission_name):
            super().add_api_spec(api_spec)

    def add_apispec_components(self, api_spec) -> None:
        super().add_apispec_components(api_spec)
        for name, schema in self.component_schemas.items():
            if name not in api_spec.components.schemas:
                api_spec.components.schema(name, schema)

    @staticmethod
    def _body() -> dict | None:
        """The request's JSON object (None when it is not one)."""
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else None


class CrmSecurityManager(AuthAuditMixin, SecurityManager):
    """Permissions resolved once per request; a bearer token, when sent, is the only identity.

    FAB let a session cookie take precedence over the Authorization header (FAB_NOTES leak 6), so
    a script holding a low-privilege token could act with the rights of a browser's session.
    """

    # FAB's 用户统计 (user statistics) chart loads Google Charts from gstatic.com: blocked by our
    # Content-Security-Policy, it showed an empty page, and pages must load nothing from the internet.
    userstatschartview = None

    @property
    def current_user(self):
        if _bearer():
            # verified once per request (keyed by the header: an app context may outlive a request)
            header = request.headers["Authorization"]
            cached = g.get("crm_jwt_user")
            if cached is None or cached[0] != header:
                cached = g.crm_jwt_user = (header, _jwt_user())
            return cached[1]
        return super().current_user

    def bearer_who(self) -> Who | None:
        """The user of a read (GET/HEAD) whose bearer token is a valid access token, as the auth cache
        knows them (no statement while the auth epoch holds); None when it is not such a request,
        the user is unknown or inactive, or built-in roles are configured — then the full path
        (flask_jwt_extended's verification and user lookup) runs and answers as it always did.
        Writes always take the full path: they need the user's row anyway."""
        if not _bearer() or not reading() or self.builtin_roles:
            return None
        lookup = current_app.extensions["flask-jwt-extended"]._user_lookup_callback
        if getattr(lookup, "__func__", None) is not type(self).load_user_jwt:
            return None  # someone else's user lookup: flask_jwt_extended's path runs it
        header = request.headers["Authorization"]
        cached = g.get("crm_bearer_who")  # keyed by the header: an app context may outlive a request
        if cached is None or cached[0] != header:
            who = None
            claims = bearer_claims()
            if claims is not None:
                from flask_jwt_extended.config import config

                try:
                    uid = int(claims[config.identity_claim_key])
                except (KeyError, TypeError, ValueError):
                    uid = None
                if uid is not None:
                    who = current_app.extensions["crm"].auth.get(("user", uid), lambda: self._load_who(uid))
                    who = who if who is not None and who.active else None
            cached = g.crm_bearer_who = (header, who)
        return cached[1]

    def _load_who(self, user_id: int) -> Who | None:
        user = self.get_user_by_id(user_id)
        return who_of(user, self.get_user_roles(user)) if user is not None else None

    def request_user(self):
        """Who this request acts for: the cached ``Who`` of a bearer read, else ``current_user``."""
        who = self.bearer_who()
        return who if who is not None else self.current_user

    def get_user_menu_access(self, menu_names=None):
        """The menu items of a bearer's roles (GET /api/v1/menu/): FAB looked for flask_jwt_extended's
        user, which a cached bearer read never loads, and answered with the public role's (none)."""
        if _bearer():
            user = self.request_user()
            if isinstance(user, Who):
                if not (user.active and user.role_ids):
                    return set()
                return {pvm.view_menu.name for pvm in self.find_roles_permission_view_menus(
                    "menu_access", list(user.role_ids))}
            active = user is not None and user.is_active
            return self._get_user_permission_view_menus(user if active else None, "menu_access", menu_names)
        return super().get_user_menu_access(menu_names)

    def has_access(self, permission_name: str, view_name: str) -> bool:
        if _bearer():
            user = self.request_user()
            if isinstance(user, Who):  # FAB's _has_view_access without built-in roles (bearer_who)
                return bool(user.active and user.role_ids
                            and self.exist_permission_on_roles(view_name, permission_name, list(user.role_ids)))
            return bool(user is not None and user.is_active
                        and self._has_view_access(user, permission_name, view_name))
        return super().has_access(permission_name, view_name)

    @staticmethod
    def _grants(*columns):
        """SELECT ``columns`` over role → permission-view → (permission, view menu)."""
        return (select(*columns)
                .select_from(Role)
                .join(assoc_permissionview_role, assoc_permissionview_role.c.role_id == Role.id)
                .join(PermissionView, PermissionView.id == assoc_permissionview_role.c.permission_view_id)
                .join(Permission, Permission.id == PermissionView.permission_id)
                .join(ViewMenu, ViewMenu.id == PermissionView.view_menu_id))

    def _pairs(self, role_filter) -> set[tuple[str, str]]:
        return set(self.session.execute(self._grants(Permission.name, ViewMenu.name).where(role_filter)).all())

    def _cached(self, key: str, load) -> set[tuple[str, str]]:
        """Per request, and across requests while the auth epoch holds (crm_meta.web.principals)."""
        if not has_request_context():
            return load()
        cache = g.setdefault("crm_permission_cache", {})
        if key not in cache:
            cache[key] = current_app.extensions["crm"].auth.get(("pairs", key), lambda: frozenset(load()))
        return cache[key]

    def get_user_by_id(self, pk):
        """The signed-in user with roles and groups in one statement (FAB lazy-loaded each)."""
        options = self.__dict__.get("_crm_user_options")
        if options is None:  # built once: fresh options cost a cache key computation per call
            options = self._crm_user_options = (joinedload(self.user_model.roles),
                                                joinedload(self.user_model.groups))
        return self.session.get(self.user_model, pk, options=options)

    def _grants_statement(self, one_view: bool):
        """The public role's and some roles' (permission, view) pairs, of every view or of one:
        built once with bound parameters (a statement built per request cost more to key for
        SQLAlchemy's compiled cache than to run)."""
        statements = self.__dict__.get("_crm_grants_statements")
        if statements is None:
            every = self._grants(Role.id, Role.name, Permission.name, ViewMenu.name).where(
                or_(Role.name == bindparam("crm_public_role"),
                    Role.id.in_(bindparam("crm_role_ids", expanding=True))))
            statements = self._crm_grants_statements = (every, every.where(ViewMenu.name == bindparam("crm_view")))
        return statements[one_view]

    def _preload(self, view_name: str | None = None) -> None:
        """The public role's and the signed-in user's permission pairs in one statement: of every
        view, or of ``view_name`` alone (a REST call checks one view: ~10 rows instead of ~140).
        Kept across requests while the auth epoch holds (crm_meta.web.principals)."""
        cache = g.setdefault("crm_permission_cache", {})
        suffix = "" if view_name is None else "@" + view_name
        if "public" in cache or "public" + suffix in cache:
            return
        user = self.request_user()
        if isinstance(user, Who):
            role_ids = list(user.role_ids)
        else:
            role_ids = sorted({r.id for r in self.get_user_roles(user)}) \
                if user is not None and getattr(user, "is_authenticated", False) else []
        public, mine = current_app.extensions["crm"].auth.get(
            ("grants", tuple(role_ids), view_name), lambda: self._load_grants(role_ids, view_name))
        cache["public" + suffix] = public
        if role_ids:
            cache[_roles_key(role_ids) + suffix] = mine

    def _load_grants(self, role_ids: list[int], view_name: str | None):
        public_role, wanted = self.auth_role_public, set(role_ids)
        params = {"crm_public_role": public_role, "crm_role_ids": role_ids}
        if view_name is not None:
            params["crm_view"] = view_name
        public, mine = set(), set()
        for role_id, role_name, perm, view in self.session.execute(
                self._grants_statement(view_name is not None), params):
            if role_name == public_role:
                public.add((perm, view))
            if role_id in wanted:
                mine.add((perm, view))
        return frozenset(public), frozenset(mine)

    def preload_view(self, view_name: str) -> None:
        """Resolve this request's permissions on ``view_name`` (the other views' when first asked)."""
        if has_request_context():
            self._preload(view_name)

    @staticmethod
    def _loaded(key: str, view_name: str) -> set[tuple[str, str]] | None:
        """The request's pairs of ``key`` that answer for ``view_name``: those of every view or
        those of that view (None: not loaded)."""
        cache = g.get("crm_permission_cache")
        if not cache:
            return None
        found = cache.get(key)
        return found if found is not None else cache.get(f"{key}@{view_name}")

    def is_item_public(self, permission_name: str, view_name: str) -> bool:
        if has_request_context():
            public = self._loaded("public", view_name)
            if public is None:
                self._preload()
                public = g.crm_permission_cache["public"]
            return (permission_name, view_name) in public
        return (permission_name, view_name) in self._pairs(Role.name == self.auth_role_public)

    def exist_permission_on_roles(self, view_name: str, permission_name: str, role_ids: list[int]) -> bool:
        key = _roles_key(role_ids)
        pairs = self._loaded(key, view_name) if has_request_context() else None
        if pairs is None:
            pairs = self._cached(key, lambda: self._pairs(Role.id.in_(role_ids)))
        return (permission_name, view_name) in pairs
