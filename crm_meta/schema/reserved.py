"""Names that may not be used for entities or fields: SQL and Python keywords and the engine's own."""
from __future__ import annotations

import keyword

# Reserved words of SQL:2016, PostgreSQL and SQLite that would need quoting in hand-written reports.
SQL_KEYWORDS = frozenset("""
all alter analyse analyze and any array as asc asymmetric authorization begin between binary both
case cast check collate collation column commit concurrently constraint create cross current_catalog
current_date current_role current_schema current_time current_timestamp current_user default
deferrable delete desc distinct do drop else end except exists false fetch for foreign freeze from
full grant group having ilike in index initially inner insert intersect into is isnull join key
lateral leading left like limit localtime localtimestamp natural not notnull null offset on only or
order outer over overlaps placing primary references returning right rollback row rows select
session_user similar some symmetric system_user table tablesample then to trailing transaction
trigger true union unique update user using values variadic verbose view when where window with
""".split())

# Attribute names of mapped classes and views that a field of the same name would shadow.
ENGINE_NAMES = frozenset({
    "metadata", "query", "registry", "session", "mapper", "table", "columns", "c",
    "id", "version", "created_at", "created_by", "updated_at", "updated_by",
})

ENTITY_PREFIXES = ("ab_", "crm_", "alembic")

# First path segments and permission names of the engine's own screens and APIs.
ENGINE_URLS = frozenset({"api", "static", "login", "logout", "admin", "users", "roles", "babel", "lang", "swagger",
                         "crm", "schema", "dictionaries", "approvals", "audit", "alerts", "notifications",
                         "followups", "sla", "security", "dashboard", "history", "board", "lookup"})


def reserved_reason(name: str, *, entity: bool) -> str | None:
    """Why ``name`` cannot be used, or None when it can."""
    if keyword.iskeyword(name):  # not soft keywords (match, case, type …): they are valid attribute names
        return f"'{name}' is a Python keyword"
    if name in SQL_KEYWORDS:
        return f"'{name}' is an SQL keyword"
    if entity and name.startswith(ENTITY_PREFIXES):
        return f"'{name}' starts with a prefix reserved for system tables ({', '.join(ENTITY_PREFIXES)})"
    if not entity and name in ENGINE_NAMES:
        return f"'{name}' is reserved by the engine"
    if entity and ("__" in name or name.endswith("_")):
        return f"'{name}' may not contain '__' or end with '_' (such names are kept for link tables)"
    if entity and name in ENGINE_URLS:
        return f"'{name}' is reserved for the engine's own URLs"
    return None
