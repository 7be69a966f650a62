"""Error pages of the screens: a refused or missing page keeps the CRM's layout, menu and language.

Werkzeug's bare English pages ("Forbidden", "Bad Request") left the user outside the app, in a
language they may not read. REST calls (``/api/``) and callers asking for JSON get
``{"message": …}`` instead; Flask-AppBuilder's REST API answers its own errors before this runs.
"""
from __future__ import annotations

import logging

from flask import Flask, current_app, g, jsonify, render_template, request
from flask_login import current_user
from werkzeug.exceptions import HTTPException

from crm_meta.metadata.model import Label
from crm_meta.web.i18n import t

log = logging.getLogger(__name__)
TITLES = {
    400: Label("请求有误", "Bad request"),
    403: Label("没有权限", "Not allowed"),
    404: Label("页面或记录不存在", "Not found"),
    405: Label("不支持此操作", "Method not allowed"),
}
# the messages werkzeug gives when the code aborting said nothing of its own
STANDARD = {
    400: Label("请求的参数不正确。", "The request could not be understood."),
    403: Label("您的角色不能打开此页面或执行此操作。", "Your role may not open this page or do this."),
    404: Label("您要找的页面或记录不存在，或不在您可查看的范围内。",
               "The page or record does not exist, or is outside what you may see."),
    405: Label("此页面不接受这种请求。", "This page does not accept this kind of request."),
}


def _message(exc: HTTPException) -> str:
    standard = STANDARD[exc.code]
    own = exc.description if exc.description != type(exc).description else None
    return own or t(standard.zh, standard.en)


def error_page(exc: HTTPException):
    if exc.code not in TITLES or request.path.startswith("/api/") or request.path.startswith("/static/"):
        return exc
    message = _message(exc)
    if request.accept_mimetypes.best == "application/json" or request.is_json:
        return jsonify({"message": message}), exc.code
    appbuilder = current_app.appbuilder
    title = TITLES[exc.code]
    if "user" not in g:  # refused before FAB's before_request put the user where its menu reads it
        g.user = current_user
    try:
        html = render_template("crm/error.html", base_template=appbuilder.base_template, appbuilder=appbuilder,
                               code=exc.code, title=t(title.zh, title.en), message=message,
                               home=t("返回首页", "Back to the home page"))
    except Exception:  # noqa: BLE001 - the page of an error must not become a second error
        log.exception("crm_meta: could not render the error page")
        return exc
    return html, exc.code, exc.get_headers() if exc.code == 405 else {}


def install_error_pages(app: Flask) -> None:
    for code in TITLES:
        app.register_error_handler(code, error_page)
