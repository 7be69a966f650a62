"""The index page: a dashboard of the widgets plugins contribute (``crm_dashboard_widgets``)."""
from __future__ import annotations

import logging

from flask_appbuilder import IndexView, expose
from flask_login import current_user
from markupsafe import Markup

from crm_meta.web import context
from crm_meta.web.i18n import current_lang, t

log = logging.getLogger("crm_meta.dashboard")


class DashboardView(IndexView):
    """``/``: each widget the signed-in user may see, rendered in its own box (a failure stays in its box)."""

    index_template = "crm/index.html"

    @expose("/")
    def index(self):
        self.update_redirect()
        boxes = []
        if current_user.is_authenticated:
            build, sm, lang = context.build(), self.appbuilder.sm, current_lang()
            for widget in build.plugins.widgets:
                if widget.entity and not sm.has_access("can_read", widget.entity):
                    continue
                try:
                    html = Markup(widget.render(build, context.actor()) or "")
                except Exception as exc:  # noqa: BLE001 - one broken widget must not break the page
                    log.exception("dashboard widget %s of plugin %s failed", widget.name, widget.plugin)
                    context.session().rollback()
                    html = Markup('<div class="alert alert-danger">{}</div>').format(
                        t(f"插件 {widget.plugin} 的组件出错：", f"Plugin {widget.plugin} failed to render this: ")
                        + f"{type(exc).__name__}: {exc}")
                boxes.append({"name": widget.name, "plugin": widget.plugin, "title": widget.title(lang), "html": html})
        return self.render_template(self.index_template, appbuilder=self.appbuilder, widgets=boxes)
