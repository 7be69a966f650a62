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


def load_and_validate(paths: list[str | Path], overlay=None) -> list[LoadedFile]:
    """Read every ``*.yaml`` under ``paths`` (plus the admins' ``overlay``, a crm_meta.schema.overlay.Overlay)
    and validate; raise SchemaErrors listing all issues."""
    files, issues = load_files(paths)
    if overlay:
        extra, more = overlay.loaded_files()
        files += extra
        issues += more
    issues += validate_files(files)
    if issues:
        raise SchemaErrors(issues)
    return files


def load_registry(paths: list[str | Path], overlay=None) -> Registry:
    """Load, validate and build the data dictionary under ``paths`` + ``overlay`` (raises SchemaErrors)."""
    from crm_meta.metadata.build import build_registry

    return build_registry(load_and_validate(paths, overlay))
