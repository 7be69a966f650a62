"""Immutable metadata built from the data dictionary — pure Python, no web or database imports."""
from crm_meta.metadata.model import (
    DictItem,
    Dictionary,
    Entity,
    Field,
    FormSection,
    Label,
    Menu,
    Registry,
)

__all__ = ["DictItem", "Dictionary", "Entity", "Field", "FormSection", "Label", "Menu", "Registry"]
