"""The access policy: one user's roles compiled into row filters and a field projection.

Every data path asks the same ``Policy`` object (built once per request): screens and REST reads
scope their queries with ``scope``; the records service checks actions, row scope, field rules,
owners and references with it; outputs are passed through ``project``. There is no second
implementation of any rule. Framework-free: SQLAlchemy and the metadata only.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from sqlalchemy import and_, false, or_, select
from sqlalchemy.orm import Session

from crm_meta.metadata.model import ACTIONS, DEPARTMENT_FIELD, SCOPES, Entity, Registry
from crm_meta.services.masking import mask

VISIBLE, MASKED, HIDDEN = 2, 1, 0  # field visibility, widest wins across roles


@dataclass(frozen=True)
class Principal:
    """Who asks: user id, role names and department (None: none). ``superuser`` skips every rule."""

    user_id: int | None
    roles: frozenset[str] = frozenset()
    department: str | None = None
    superuser: bool = False


SYSTEM = Principal(None, superuser=True)  # command-line tools, jobs and demo data


@dataclass(frozen=True)
class EntityAccess:
    """One user's rights on one entity, compiled from all of their roles."""

    entity: str
    actions: frozenset[str]
    scope: str | None  # widest row scope among the roles that may read; None: no record at all
    hidden: frozenset[str]
    readonly: frozenset[str]
    masked: Mapping[str, str]  # field → mask kind, for fields shown masked to this user

    def can(self, action: str) -> bool:
        return action in self.actions


class Policy:
    """The compiled access rules of one principal; cheap to build, caches per entity."""

    def __init__(self, registry: Registry, principal: Principal, tree: Mapping[str, str | None] | None = None,
                 member_table: Any = None):
        self.registry = registry
        self.principal = principal
        self.tree = tree or {}  # department code → parent code
        self.member_table = member_table
        self._access: dict[str, EntityAccess] = {}
        self._below: dict[str, frozenset[str]] = {}

    # what the user may do -----------------------------------------------------------------
    @property
    def user_id(self) -> int | None:
        return self.principal.user_id

    @property
    def superuser(self) -> bool:
        return self.principal.superuser or any(
            (r := self.registry.role(name)) is not None and r.superuser for name in self.principal.roles)

    def access(self, entity: str) -> EntityAccess:
        if entity not in self._access:
            self._access[entity] = self._compile(self.registry.entity(entity))
        return self._access[entity]

    def can(self, entity: str, action: str) -> bool:
        return self.access(entity).can(action)

    def _compile(self, entity: Entity) -> EntityAccess:
        sensitive = {f.name: f.mask for f in entity.fields if f.mask}
        if self.superuser:
            return EntityAccess(entity.name, frozenset(ACTIONS), "all", frozenset(),
                                frozenset(), MappingProxyType(sensitive))
        actions: set[str] = set()
        scopes: list[str] = []
        grants = []
        for name in sorted(self.principal.roles):
            role = self.registry.role(name)
            grant = role.grant(entity.name) if role else None
            if grant is None:
                continue
            actions |= grant.actions
            if "read" in grant.actions:
                scopes.append(grant.scope)
                grants.append(grant)
        if not scopes:  # may not read: no other action makes sense without seeing the record
            return EntityAccess(entity.name, frozenset(), None, frozenset(f.name for f in entity.fields),
                                frozenset(f.name for f in entity.fields), MappingProxyType({}))
        hidden, readonly, masked = set(), set(), {}
        for f in entity.fields:
            rules = [g.rule(f) for g in grants]
            seen = max(HIDDEN if r == "hidden" else MASKED if r == "masked" else VISIBLE for r in rules)
            if seen == HIDDEN:
                hidden.add(f.name)
            elif seen == MASKED or f.mask:
                masked[f.name] = f.mask or "all"
            if all(r in ("hidden", "readonly") for r in rules):
                readonly.add(f.name)
        scope = max(scopes, key=SCOPES.index)
        return EntityAccess(entity.name, frozenset(actions), scope, frozenset(hidden), frozenset(readonly),
                            MappingProxyType(masked))

    # departments --------------------------------------------------------------------------
    def below(self, department: str | None) -> frozenset[str]:
        """``department`` and every department under it."""
        if department is None:
            return frozenset()
        if department not in self._below:
            self._below[department] = subtree(department, self.tree)
        return self._below[department]

    def departments_in_scope(self, scope: str | None) -> frozenset[str] | None:
        """The departments whose records a scope covers (None: every department)."""
        if scope == "all":
            return None
        if scope == "department_tree":
            return self.below(self.principal.department)
        if scope == "department" and self.principal.department:
            return frozenset({self.principal.department})
        return frozenset()

    # rows ---------------------------------------------------------------------------------
    def row_filter(self, entity: str, model: Any):
        """A WHERE clause limiting ``model`` to the rows the user may read; None: no limit."""
        access = self.access(entity)
        ent = self.registry.entity(entity)
        if access.scope is None:
            return false()
        if access.scope == "all" or not ent.owned:
            return None
        uid = self.principal.user_id
        mine = [getattr(model, f"{ent.owner_field}_id") == uid]
        if ent.assignee_field:
            mine.append(getattr(model, f"{ent.assignee_field}_id") == uid)
        departments = self.departments_in_scope(access.scope)
        if departments and ent.has_field(DEPARTMENT_FIELD):
            mine.append(getattr(model, DEPARTMENT_FIELD).in_(sorted(departments)))
        return or_(*mine) if uid is not None or len(mine) > 1 else false()

    def count_parts(self, entity: str, model: Any) -> list | None:
        """The row filter split into disjoint clauses whose capped counts add up (None: one clause).

        ``department IN (…) OR owner = me`` makes PostgreSQL build a bitmap of every matching row
        before a capped count can stop; counted apart, each part is an index scan that stops at the
        cap (bench/policy.py: manager count 11–15 ms → see the note in docs/design.md).
        """
        access = self.access(entity)
        ent = self.registry.entity(entity)
        if access.scope in (None, "all", "own") or not ent.owned or not ent.has_field(DEPARTMENT_FIELD):
            return None
        departments = self.departments_in_scope(access.scope)
        if not departments:
            return None
        dept = getattr(model, DEPARTMENT_FIELD)
        in_scope = dept.in_(sorted(departments))
        uid = self.principal.user_id
        mine = [getattr(model, f"{ent.owner_field}_id") == uid]
        if ent.assignee_field:
            mine.append(getattr(model, f"{ent.assignee_field}_id") == uid)
        return [in_scope, and_(or_(*mine), or_(dept.is_(None), ~in_scope))]

    def scope(self, entity: str, stmt: Any, model: Any = None):
        """``stmt`` (a Select or an ORM Query) limited to the rows of ``entity`` the user may read."""
        if model is None:
            model = stmt.column_descriptions[0]["entity"]
        clause = self.row_filter(entity, model)
        if clause is None:
            return stmt
        return stmt.filter(clause) if hasattr(stmt, "filter") else stmt.where(clause)

    # fields -------------------------------------------------------------------------------
    def display(self, entity: str, field: str, value: Any) -> Any:
        """What the user sees of one stored value: masked when the field is masked for them."""
        kind = self.access(entity).masked.get(field)
        return mask(kind, value) if kind else value

    def project(self, entity: str, data: dict[str, Any]) -> dict[str, Any]:
        """A serialised record as the user may see it: hidden fields dropped, masked ones masked."""
        access = self.access(entity)
        out = {}
        for key, value in data.items():  # keys are field names (the REST schemas name fk fields so too)
            if key in access.hidden:
                continue
            kind = access.masked.get(key)
            out[key] = mask(kind, value) if kind else value
        return out

    def may_filter(self, entity: str, field: str) -> bool:
        """Filtering or sorting on a field probes its value: only on fields the user sees in full."""
        access = self.access(entity)
        if field in access.hidden:
            return False
        return field not in access.masked or access.can("reveal")

    # users a record may be given to -------------------------------------------------------
    def assignable_departments(self, entity: str) -> frozenset[str] | None:
        """Departments whose members may own this user's records (None: anyone); empty: only me."""
        access = self.access(entity)
        if self.superuser or access.scope == "all":
            return None
        return self.departments_in_scope(access.scope)

    def may_assign(self, session: Session, entity: str, user_id: int) -> bool:
        if user_id == self.principal.user_id:
            return True
        departments = self.assignable_departments(entity)
        if departments is None:
            return True
        if not departments or self.member_table is None:
            return False
        t = self.member_table
        row = session.execute(select(t.c.department).where(t.c.user_id == user_id)).first()
        return row is not None and row.department in departments

    def department_of(self, session: Session, user_id: int | None) -> str | None:
        if user_id is None or self.member_table is None:
            return None
        if user_id == self.principal.user_id and self.principal.department:
            return self.principal.department
        t = self.member_table
        return session.execute(select(t.c.department).where(t.c.user_id == user_id)).scalar()


def subtree(department: str, tree: Mapping[str, str | None]) -> frozenset[str]:
    """``department`` and every department below it (``tree``: code → parent code)."""
    children: dict[str | None, list[str]] = {}
    for code, parent in tree.items():
        children.setdefault(parent, []).append(code)
    found, todo = {department}, [department]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return frozenset(found)


def system_policy(registry: Registry, member_table: Any = None) -> Policy:
    return Policy(registry, SYSTEM, member_table=member_table)
