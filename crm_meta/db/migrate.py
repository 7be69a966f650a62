"""Plan, then apply: the entry points start-up, the CLI and the schema screens share.

``plan`` describes what the database needs (crm_meta.db.plan); ``apply`` runs it inside the caller's
transaction (crm_meta.db.apply), refusing blocked steps and, unless allowed, destructive ones.
"""
from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from crm_meta.db.apply import execute
from crm_meta.db.plan import Change, Plan, build_plan

__all__ = ["Change", "Plan", "plan", "apply"]


def plan(connection: Connection, metadata: MetaData, registry=None, *, tables: set[str] | None = None) -> Plan:
    """What it takes to bring the database to ``metadata``; each step says whether it is safe."""
    return build_plan(connection, metadata, registry, tables=tables)


def apply(connection: Connection, metadata: MetaData, registry=None, *, allow_destructive: bool = False,
          tables: set[str] | None = None, fail_after: int | None = None) -> list[Change]:
    """Apply the plan inside the caller's transaction; refuse destructive steps unless allowed."""
    return execute(connection, metadata, plan(connection, metadata, registry, tables=tables),
                   allow_destructive=allow_destructive, fail_after=fail_after)
