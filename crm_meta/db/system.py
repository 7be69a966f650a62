"""The engine's own tables: dictionary items, number sequences and schema state."""
from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SYSTEM_TABLES = ("crm_dict_item", "crm_sequence", "crm_schema_state")


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
    return {"dict_item": dict_item, "sequence": sequence, "state": state}
