"""FAB's security manager with permissions resolved once per request instead of once per check."""
from __future__ import annotations

from flask import g, has_request_context, request
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.sqla.models import (
    Permission,
    PermissionView,
    Role,
    ViewMenu,
    assoc_permissionview_role,
)
from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload

from crm_meta.web.auth import AuthAuditMixin


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

    @property
    def current_user(self):
        if _bearer():
            if "crm_jwt_user" not in g:
                g.crm_jwt_user = _jwt_user()
            return g.crm_jwt_user
        return super().current_user

    def has_access(self, permission_name: str, view_name: str) -> bool:
        if _bearer():
            user = self.current_user
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
        if not has_request_context():
            return load()
        cache = g.setdefault("crm_permission_cache", {})
        if key not in cache:
            cache[key] = load()
        return cache[key]

    def get_user_by_id(self, pk):
        """The signed-in user with roles and groups in one statement (FAB lazy-loaded each)."""
        return self.session.get(self.user_model, pk, options=[joinedload(self.user_model.roles),
                                                              joinedload(self.user_model.groups)])

    def _preload(self) -> None:
        """The public role's and the signed-in user's permission pairs in one statement."""
        cache = g.setdefault("crm_permission_cache", {})
        if "public" in cache:
            return
        user = self.current_user
        role_ids = sorted({r.id for r in self.get_user_roles(user)}) \
            if user is not None and getattr(user, "is_authenticated", False) else []
        stmt = self._grants(Role.id, Role.name, Permission.name, ViewMenu.name).where(
            or_(Role.name == self.auth_role_public, Role.id.in_(role_ids)))
        public, mine = set(), set()
        for role_id, role_name, perm, view in self.session.execute(stmt):
            if role_name == self.auth_role_public:
                public.add((perm, view))
            if role_id in role_ids:
                mine.add((perm, view))
        cache["public"] = public
        if role_ids:
            cache["roles:" + ",".join(map(str, role_ids))] = mine

    def is_item_public(self, permission_name: str, view_name: str) -> bool:
        if has_request_context():
            self._preload()
        public = self._cached("public", lambda: self._pairs(Role.name == self.auth_role_public))
        return (permission_name, view_name) in public

    def exist_permission_on_roles(self, view_name: str, permission_name: str, role_ids: list[int]) -> bool:
        key = "roles:" + ",".join(map(str, sorted(role_ids)))
        pairs = self._cached(key, lambda: self._pairs(Role.id.in_(role_ids)))
        return (permission_name, view_name) in pairs
