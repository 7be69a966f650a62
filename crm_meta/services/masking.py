"""How sensitive values are shown to those who may not see them (pure functions, no framework)."""
from __future__ import annotations

from typing import Any

MASK_KINDS = ("phone", "email", "last4", "all")


def mask(kind: str | None, value: Any) -> Any:
    """The masked form of ``value``: phone 138****5678, email ***@example.com, last4 ****1234, all ****.

    None and empty values stay as they are (nothing to hide, and the form shows them empty).
    """
    if value is None or value == "":
        return value
    text = str(value)
    if kind == "phone":
        digits = text.replace(" ", "").replace("-", "")
        if len(digits) >= 8:
            return f"{digits[:3]}****{digits[-4:]}"
        return "****" + digits[-2:] if len(digits) > 2 else "****"
    if kind == "email":
        local, sep, domain = text.partition("@")
        return f"***@{domain}" if sep else "****"
    if kind == "last4":
        return "****" + text[-4:] if len(text) > 4 else "****"
    return "****"


def looks_masked(kind: str | None, value: Any, real: Any) -> bool:
    """True when ``value`` is exactly what ``real`` looks like masked (a form sent back unchanged)."""
    return value not in (None, "") and real not in (None, "") and value == mask(kind, real)
