"""The hooks of crm_lifecycle (every function marked ``@hookimpl`` is found by its name).

* ``crm_schema_paths``       ``schemas/lifecycle.yaml``: scores on ``customer``, the ``lifecycle_stage``
                             dictionary, the ``prediction_run`` entity under 数据分析 Analytics
* ``crm_cli_commands``       ``flask --app app crm lifecycle train | score | evaluate``
* ``crm_scheduled_jobs``     ``lifecycle_nightly``: train and score once a day
* ``crm_dashboard_widgets``  risk distribution and the customers most at risk (in the viewer's scope)
* ``crm_before_create`` /
  ``crm_before_update``      prediction runs are written by the plugin only, never by hand

The models and the pipeline live in the other modules; nothing heavy is imported at start-up.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from crm_meta import hookimpl
from crm_meta.errors import HookRefused
from crm_meta.plugins import Widget

HERE = Path(__file__).resolve().parent
RUN_ENTITY = "prediction_run"


@hookimpl
def crm_schema_paths():
    return [HERE / "schemas"]


@hookimpl
def crm_cli_commands():
    from .commands import lifecycle

    return [lifecycle]


def nightly(build) -> str:
    """The daily job: train on today's data, then score every customer (one ``prediction_run``)."""
    from . import pipeline
    from .commands import model_path

    return pipeline.train_and_score(build.db.session, build.models, model_path()).summary()


@hookimpl
def crm_scheduled_jobs():
    return [("lifecycle_nightly", timedelta(days=1), nightly)]


def render_widget(build, actor) -> str:
    from .widget import render_risk

    return render_risk(build, actor)


@hookimpl
def crm_dashboard_widgets():
    return [Widget("lifecycle_risk", {"zh": "客户流失风险", "en": "Churn risk"}, render_widget,
                   entity="customer", order=20)]


def _refuse_manual_run(actor) -> None:
    raise HookRefused("预测运行记录由生命周期插件自动生成，不能手工创建或修改" if actor.lang == "zh"
                      else "Prediction runs are recorded by the lifecycle plugin; they cannot be created or "
                           "changed by hand")


@hookimpl
def crm_before_create(entity, actor):
    if entity == RUN_ENTITY:
        _refuse_manual_run(actor)


@hookimpl
def crm_before_update(entity, actor):
    if entity == RUN_ENTITY:
        _refuse_manual_run(actor)
