"""FAB's security manager with permissions resolved once per request instead of once per check."""
from __future__ import annotations

from flask import g, has_request_context
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.sqla.models import (
    Permission,
    PermissionView,
    Role,
    ViewMenu,
    assoc_permissionview_role,
)
from sqlalchemy import select


class CrmSecurityManager(SecurityManager):
    def _pairs(self, role_filter) -> set[tuple[str, str]]:
        stmt = (select(Permission.name, ViewMenu.name)
                .join(PermissionView, PermissionView.permission_id == Permission.id)
                .join(ViewMenu, ViewMenu.id == PermissionView.view_menu_id)
                .join(assoc_permissionview_role,
                      assoc_permissionview_role.c.permission_view_id == PermissionView.id)
                .join(Role, Role.id == assoc_permissionview_role.c.role_id)
                .where(role_filter))
        return set(self.session.execute(stmt).all())

    def _cached(self, key: str, load) -> set[tuple[str, str]]:
        if not has_request_context():
            return load()
        cache = g.setdefault("crm_permission_cache", {})
        if key not in cache:
            cache[key] = load()
        return cache[key]

    def is_item_public(self, permission_name: str, view_name: str) -> bool:
        public = self._cached("public", lambda: self._pairs(Role.name == self.auth_role_public))
        return (permission_name, view_name) in public

    def exist_permission_on_roles(self, view_name: str, permission_name: str, role_ids: list[int]) -> bool:
        key = "roles:" + ",".join(map(str, sorted(role_ids)))
        pairs = self._cached(key, lambda: self._pairs(Role.id.in_(role_ids)))
        return (permission_name, view_name) in pairs
