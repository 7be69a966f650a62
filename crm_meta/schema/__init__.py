"""Load and validate data dictionary files — pure Python, no web or database imports."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from crm_meta.errors import SchemaErrors
from crm_meta.schema.loader import LoadedFile, load_files
from crm_meta.schema.validate import validate_files

if TYPE_CHECKING:
    from crm_meta.metadata.model import Registry

__all__ = ["LoadedFile", "load_files", "validate_files", "load_and_validate", "load_registry"]


def load_and_validate(paths: list[str | Path], overlay=None, field_types=None) -> list[LoadedFile]:
    """Read every ``*.yaml`` under ``paths`` (plus the admins' ``overlay``, a crm_meta.schema.overlay.Overlay)
    and validate; raise SchemaErrors listing all issues. ``field_types``: the app's field types
    (``Plugins.field_types()``, a crm_meta.metadata.fieldtypes.FieldTypes); None: the built-in ones."""
    files, issues = load_files(paths)
    if overlay:
        extra, more = overlay.loaded_files()
        files += extra
        issues += more
    issues += validate_files(files, field_types)
    if issues:
        raise SchemaErrors(issues)
    return files


def load_registry(paths: list[str | Path], overlay=None, field_types=None) -> Registry:
    """Load, validate and build the data dictionary under ``paths`` + ``overlay`` (raises SchemaErrors)
    with the app's ``field_types`` (None: the built-in types only)."""
    from crm_meta.metadata.build import build_registry
    from crm_meta.metadata.fieldtypes import field_types_of

    types = field_types_of(field_types)
    return build_registry(load_and_validate(paths, overlay, types), types)
