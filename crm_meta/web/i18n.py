"""Which language the current request speaks, and labels that resolve per request."""
from __future__ import annotations

from flask import has_request_context
from flask_babel import LazyString, get_locale

from crm_meta.metadata.model import Label

LANGUAGES = {"zh": {"flag": "cn", "name": "中文"}, "en": {"flag": "gb", "name": "English"}}


def current_lang() -> str:
    """'en' or 'zh' (the default) for the current request."""
    if not has_request_context():
        return "zh"
    try:
        locale = get_locale()
    except Exception:  # no babel on this app (e.g. a bare test app)
        return "zh"
    return "en" if locale is not None and str(locale).startswith("en") else "zh"


def lazy(label: Label | None) -> LazyString | str:
    """A string that renders in the language of whichever request shows it."""
    if label is None:
        return ""
    return LazyString(lambda: label.get(current_lang()))


def t(zh: str, en: str) -> str:
    return en if current_lang() == "en" else zh
