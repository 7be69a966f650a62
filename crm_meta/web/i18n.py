"""Which language the current request speaks, and labels that resolve per request."""
from __future__ import annotations

from flask import current_app, has_request_context, request, session
from flask_babel import LazyString, get_locale

from crm_meta.metadata.model import Label

API_PREFIX = "/api/"
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


def select_locale() -> str | None:
    """Flask-Babel's locale selector: FAB's choice (the ``_l_`` argument, then the language picked on
    the screens, else the default, which the screens keep in the session as FAB does — its language
    menu reads it there), except that API calls do not get the default written into a session:
    that write answered each call with a ``Set-Cookie`` and made every later call decode a session
    cookie it does not need."""
    if not has_request_context():
        return None  # Flask-Babel's default
    default = current_app.config["BABEL_DEFAULT_LOCALE"]
    chosen = request.args.get("_l_")
    if chosen is not None:
        return chosen if chosen in current_app.config["LANGUAGES"] else default
    locale = session.get("locale")
    if locale:
        return locale
    if not request.path.startswith(API_PREFIX):
        session["locale"] = default
    return default


def install_locale_selector(app) -> None:
    """Replace FAB's selector (call after ``AppBuilder.init_app``)."""
    app.extensions["babel"].locale_selector = select_locale


def lazy(label: Label | None) -> LazyString | str:
    """A string that renders in the language of whichever request shows it."""
    if label is None:
        return ""
    return LazyString(lambda: label.get(current_lang()))


def t(zh: str, en: str) -> str:
    return en if current_lang() == "en" else zh
