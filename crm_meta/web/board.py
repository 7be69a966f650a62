"""Kanban boards: the records of a pipeline by state, dragged from column to column (same rules as
the transition buttons — the move goes through POST /api/v1/<entity>/<id>/transition)."""
from __future__ import annotations

from flask import abort, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from sqlalchemy import func, select

from crm_meta.metadata.model import Label
from crm_meta.web import context
from crm_meta.web.forms import user_name
from crm_meta.web.i18n import current_lang, lazy, t

CARDS_PER_COLUMN = 50


def _money(entity):
    return next((f for f in entity.user_fields if f.base == "money"), None)


class BoardView(BaseView):
    route_base = "/crm/board"
    default_view = "board"
    class_permission_name = "board"
    method_permission_name = {"board": "read"}
    base_permissions = ["can_read"]

    @expose("/<entity>/")
    @has_access
    def board(self, entity: str):
        build = context.build()
        registry = build.registry
        field = request.args.get("field")
        pipelines = [p for p in registry.pipelines_of(entity) if field in (None, p.field_name)] \
            if entity in build.models.models else []
        policy = context.policy()
        if not pipelines or not policy.can(entity, "read"):
            abort(404)
        pipeline = pipelines[0]
        ent = registry.entity(entity)
        f = ent.field(pipeline.field_name)
        model = build.models.model(entity)
        column = getattr(model, f.column)
        access = policy.access(entity)
        money = _money(ent)
        if money is not None and money.name in access.hidden:
            money = None
        lang = current_lang()
        session = context.session()
        counts = dict(session.execute(policy.scope(entity, select(column, func.count()).group_by(column), model)).all())
        columns = []
        for item in context.dictionaries().items(f.dictionary):
            stmt = policy.scope(entity, select(model).where(column == item.code)
                                .order_by(model.id.desc()).limit(CARDS_PER_COLUMN), model)
            cards = []
            for obj in session.execute(stmt).scalars():
                owner = getattr(obj, ent.owner_field) if ent.owner_field else None
                amount = getattr(obj, money.column) if money is not None else None
                cards.append({"id": obj.id, "title": str(obj), "owner": user_name(owner) if owner else "",
                              "amount": f"{amount:,.0f}" if amount is not None else "",
                              "url": url_for(f"{type(self)._entity_view(entity)}.show", pk=obj.id)})
            columns.append({"code": item.code, "label": item.label.get(lang), "cards": cards,
                            "count": counts.get(item.code, 0)})
        return self.render_template(
            "crm/board.html", columns=columns, entity=ent, field=f.name, pipeline=pipeline,
            title=pipeline.label.get(lang), can_move=policy.can(entity, "update"),
            api=f"/api/v1/{entity}/", move_base=f"/{entity}/move/",
            labels={x.name: x.label.get(lang) for x in ent.fields},
            t_hint=t("拖动卡片到另一列以流转；需要补充信息时会提示。",
                     "Drag a card to another column to move it; you are told when something is missing."),
            t_fill=t("填写并流转", "Fill in and move"))

    @staticmethod
    def _entity_view(entity: str) -> str:
        return "".join(p.capitalize() for p in entity.split("_")) + "View"


def register_boards(appbuilder, registry) -> None:
    """The board screen and one menu link per pipeline, under its entity's menu."""
    appbuilder.add_view_no_menu(BoardView)
    for p in registry.pipelines:
        entity = registry.entity(p.entity)
        menu = registry.menu(entity.menu) if entity.menu else None
        appbuilder.add_link(f"board_{p.name}", href=f"/crm/board/{p.entity}/?field={p.field_name}",
                            label=lazy(Label(f"{p.label.zh}看板", f"{p.label.en} board")), icon="fa-columns",
                            category=menu.name if menu else "", category_label=lazy(menu.label) if menu else "")
