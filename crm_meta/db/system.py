"""The engine's own tables: dictionary items, number sequences and schema state."""
from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SYSTEM_TABLES = ("crm_dict_item", "crm_sequence", "crm_schema_state", "crm_schema_overlay", "crm_member", "crm_audit", "crm_alert",
                 "crm_change_request", "crm_status_history", "crm_notification")


def define_system_tables(metadata: MetaData) -> dict[str, Table]:
    dict_item = Table(
        "crm_dict_item", metadata,
        Column("id", Integer, primary_key=True),
        Column("dictionary", String(40), nullable=False),
        Column("code", String(64), nullable=False),
        Column("label_zh", String(200), nullable=False),
        Column("label_en", String(200), nullable=False),
        Column("sort_order", Integer, nullable=False, default=0),
        Column("active", Boolean, nullable=False, default=True),
        Column("grp", String(40)),
        Column("attrs", JSON),
        Column("origin", String(10), nullable=False, default="yaml"),
        UniqueConstraint("dictionary", "code", name="uq_crm_dict_item_dictionary_code"),
    )
    sequence = Table(
        "crm_sequence", metadata,
        Column("name", String(80), primary_key=True),
        Column("period", String(64), primary_key=True),
        Column("value", BigInteger, nullable=False),
    )
    state = Table(
        "crm_schema_state", metadata,
        Column("key", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )
    # What admins changed on the schema screens (crm_meta.schema.overlay): one row per custom field or entity.
    overlay = Table(
        "crm_schema_overlay", metadata,
        Column("kind", String(10), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("name", String(64), primary_key=True),
        Column("spec", JSON, nullable=False),
        Column("placement", JSON),
        Column("position", Integer, nullable=False, default=0),
        Column("updated_at", DateTime),
        Column("updated_by", Integer),
    )
    # Which department a user belongs to (a code of the `department` dictionary) and whether they manage it.
    member = Table(
        "crm_member", metadata,
        Column("user_id", Integer, primary_key=True, autoincrement=False),
        Column("department", String(64), nullable=False, index=True),
        Column("is_manager", Boolean, nullable=False, default=False),
    )
    audit, alert = define_audit_tables(metadata)
    return {"dict_item": dict_item, "sequence": sequence, "state": state, "member": member, "overlay": overlay,
            "audit": audit, "alert": alert, "change_request": define_change_request_table(metadata),
            "status_history": define_status_history_table(metadata),
            "notification": define_notification_table(metadata)}


def define_audit_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The audit trail (append-only: crm_meta.services.audit installs triggers refusing UPDATE/DELETE)
    and the alerts raised from it (acknowledging one is a change on crm_alert, never on crm_audit).

    No foreign key to ab_user on purpose: an entry outlives the account it names, and a
    ``SET NULL`` cascade would be an update of the trail.
    """
    audit = Table(
        "crm_audit", metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("at", DateTime, nullable=False),  # naive UTC
        Column("user_id", Integer),
        Column("username", String(256)),  # for login_failed: the name that was tried
        Column("ip", String(64)),
        Column("request_id", String(64)),
        Column("action", String(32), nullable=False),
        Column("entity", String(64)),
        Column("record_id", BigInteger),
        Column("field", String(64)),
        Column("old_value", Text),  # raw values: the one place unmasked values are kept
        Column("new_value", Text),
        Column("quantity", Integer, nullable=False, default=1),  # e.g. records exported
        Column("detail", JSON),
        Index("ix_crm_audit_entity_record", "entity", "record_id"),
        Index("ix_crm_audit_user_at", "user_id", "at"),
        Index("ix_crm_audit_action_at", "action", "at"),
    )
    alert = Table(
        "crm_alert", metadata,
        Column("id", Integer, primary_key=True),
        Column("rule", String(64), nullable=False),
        Column("subject", String(256), nullable=False),  # the username (or attempted account)
        Column("user_id", Integer),
        Column("hits", Integer, nullable=False),
        Column("threshold", Integer, nullable=False),
        Column("window_minutes", Integer, nullable=False),
        Column("first_at", DateTime, nullable=False),
        Column("last_at", DateTime, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("status", String(16), nullable=False, default="open"),
        Column("acknowledged_by_id", Integer),
        Column("acknowledged_by", String(256)),
        Column("acknowledged_at", DateTime),
        Index("ix_crm_alert_status_created", "status", "created_at"),
        Index("ix_crm_alert_rule_subject", "rule", "subject"),
    )
    return audit, alert


def define_change_request_table(metadata: MetaData) -> Table:
    """Pending changes of key fields (approvals): old → new values, who asked and why, the decision."""
    return Table(
        "crm_change_request", metadata,
        Column("id", Integer, primary_key=True),
        Column("entity", String(64), nullable=False),
        Column("record_id", BigInteger, nullable=False),
        Column("changes", JSON, nullable=False),  # {field: [old, new]} as stored values (JSON-safe)
        Column("reason", Text),
        Column("status", String(16), nullable=False, default="pending"),  # pending|approved|rejected
        Column("requested_by_id", Integer, nullable=False),
        Column("requested_at", DateTime, nullable=False),
        Column("decided_by_id", Integer),
        Column("decided_at", DateTime),
        Column("comment", Text),
        Index("ix_crm_change_request_record", "entity", "record_id", "status"),
        Index("ix_crm_change_request_status", "status", "requested_at"),
    )


def define_status_history_table(metadata: MetaData) -> Table:
    """Every move of a pipeline field (stage, status): from → to, who, when, why."""
    return Table(
        "crm_status_history", metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("entity", String(64), nullable=False),
        Column("record_id", BigInteger, nullable=False),
        Column("field", String(64), nullable=False),
        Column("from_code", String(64)),
        Column("to_code", String(64), nullable=False),
        Column("user_id", Integer),
        Column("username", String(256)),
        Column("at", DateTime, nullable=False),
        Column("comment", Text),
        Index("ix_crm_status_history_record", "entity", "record_id", "id"),
    )


def define_notification_table(metadata: MetaData) -> Table:
    """What the system tells a user (follow-up reminders, SLA escalations): listed on
    /crm/notifications/ until read. ``dedupe_key`` makes a notice idempotent per user and kind (the
    day of a reminder, the ticket of an escalation): writers insert with ON CONFLICT DO NOTHING."""
    return Table(
        "crm_notification", metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("user_id", Integer, nullable=False),
        Column("kind", String(32), nullable=False),  # follow_up_due | sla_breach | ...
        Column("entity", String(64)),
        Column("record_id", BigInteger),
        Column("message", Text, nullable=False),  # Chinese text; detail has {"zh", "en", ...}
        Column("detail", JSON),
        Column("dedupe_key", String(80), nullable=False),
        Column("created_at", DateTime, nullable=False),  # naive UTC
        Column("read_at", DateTime),
        UniqueConstraint("user_id", "kind", "dedupe_key", name="uq_crm_notification_user_kind_key"),
        Index("ix_crm_notification_user_read", "user_id", "read_at", "id"),
    )
