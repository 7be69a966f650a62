"""The auth epoch: a token in ``crm_schema_state`` that changes whenever who-may-do-what changes.

Database triggers on the tables that decide a user's rights — users, roles, groups, their links,
permissions and view menus, department memberships and dictionary items (the department tree) —
replace the token with a fresh random one in the same transaction as the change. A reader that
sees the token it saw before therefore knows that none of those tables changed since: users,
roles, grants and compiled access policies read under that token are still right
(``crm_meta.web.principals``). Triggers catch every writer — the security screens of
Flask-AppBuilder, the command line, another worker process, a script with plain SQL — which
invalidation in application code would not.

Random rather than a counter: a database restored from a backup, or another database with the
same count, never presents a token that a running process has cached data under.
"""
from __future__ import annotations

from sqlalchemy.engine import Connection, Engine

KEY = "auth_epoch"
READ_SQL = f"SELECT value FROM crm_schema_state WHERE key = '{KEY}'"

# table → the columns whose UPDATE matters (None: any). ab_user's login counters and timestamps
# change at every sign-in and decide nothing about rights.
WATCHED: dict[str, tuple[str, ...] | None] = {
    "ab_user": ("id", "username", "active"),
    "ab_role": None,
    "ab_user_role": None,
    "ab_group": None,
    "ab_user_group": None,
    "ab_group_role": None,
    "ab_permission": None,
    "ab_view_menu": None,
    "ab_permission_view": None,
    "ab_permission_view_role": None,
    "crm_member": None,
    "crm_dict_item": None,
}
OPERATIONS = {"i": "INSERT", "u": "UPDATE", "d": "DELETE"}
LOCK_ID = 7262012

SQLITE_BUMP = f"UPDATE crm_schema_state SET value = lower(hex(randomblob(12))) WHERE key = '{KEY}'"
# The epoch of the schema the changed table is in (TG_TABLE_SCHEMA), whatever the writer's search_path:
# two installs in two schemas of one database each keep their own. ("%%": the text goes through the
# driver, which reads "%" as a placeholder.)
PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION crm_bump_auth_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('UPDATE %%I.crm_schema_state SET value = md5(random()::text || clock_timestamp()::text) '
                 'WHERE key = %%L', TG_TABLE_SCHEMA, '{KEY}');
  RETURN NULL;
END
$$"""


def trigger_name(table: str, op: str = "") -> str:
    return f"crm_auth_epoch_{table}{'_' + op if op else ''}"


def _sqlite_triggers(tables) -> dict[str, str]:
    out = {}
    for table in tables:
        for op, verb in OPERATIONS.items():
            columns = WATCHED[table] if op == "u" else None
            what = f"UPDATE OF {', '.join(columns)}" if columns else verb
            out[trigger_name(table, op)] = (f"CREATE TRIGGER IF NOT EXISTS {trigger_name(table, op)} AFTER {what} "
                                            f"ON {table} BEGIN {SQLITE_BUMP}; END")
    return out


def _pg_triggers(tables) -> dict[str, str]:
    out = {}
    for table in tables:
        columns = WATCHED[table]
        update = f"UPDATE OF {', '.join(columns)}" if columns else "UPDATE"
        out[trigger_name(table)] = (f"CREATE TRIGGER {trigger_name(table)} AFTER INSERT OR {update} OR DELETE "
                                    f"OR TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION crm_bump_auth_epoch()")
    return out


def _existing_tables(conn: Connection) -> list[str]:
    if conn.dialect.name == "sqlite":
        names = set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars())
    else:
        names = set(conn.exec_driver_sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").scalars())
    return [t for t in WATCHED if t in names]


def _installed(conn: Connection) -> set[str]:
    if conn.dialect.name == "sqlite":
        names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars()
    else:
        names = conn.exec_driver_sql(  # this schema's tables only (another install may share the database)
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT t.tgisinternal AND n.nspname = current_schema()").scalars()
    return {n for n in names if n.startswith(trigger_name(""))}


def _wanted(conn: Connection, tables) -> dict[str, str]:
    return _sqlite_triggers(tables) if conn.dialect.name == "sqlite" else _pg_triggers(tables)


def install(engine: Engine) -> None:
    """Create the epoch row and the triggers that are missing, and start a new epoch.

    Runs at every start (one catalogue query when all is in place): a table rebuilt by a migration
    loses its triggers, and this puts them back. The new epoch at start makes every other worker
    drop what it cached, should a trigger have been missing for a while.
    """
    if engine.dialect.name not in ("sqlite", "postgresql"):
        return
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK_ID})")
        wanted = _wanted(conn, _existing_tables(conn))
        missing = sorted(set(wanted) - _installed(conn))
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(PG_FUNCTION)  # (re)defined each start: a newer body replaces an older one
        for name in missing:
            conn.exec_driver_sql(wanted[name])
        fresh = "lower(hex(randomblob(12)))" if conn.dialect.name == "sqlite" \
            else "md5(random()::text || clock_timestamp()::text)"
        bumped = conn.exec_driver_sql(f"UPDATE crm_schema_state SET value = {fresh} WHERE key = '{KEY}'").rowcount
        if not bumped:
            conn.exec_driver_sql(f"INSERT INTO crm_schema_state (key, value) VALUES ('{KEY}', {fresh})")
        conn.commit()


def read(conn: Connection) -> str | None:
    """The current epoch (None: not installed in this database)."""
    return conn.exec_driver_sql(READ_SQL).scalar()
