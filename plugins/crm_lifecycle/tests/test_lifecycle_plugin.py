"""The lifecycle plugin inside the CRM, end to end on a generated CRM (SQLite in a temp dir).

One app with 300 generated customers (bulk-loaded, :mod:`crm_lifecycle.sample_crm`) is trained and
scored once for the module; the failure paths get small apps of their own.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import text

from crm_lifecycle import reasons, stages
from crm_lifecycle.churn import Contribution
from crm_lifecycle.features import build_features
from crm_lifecycle.sample_crm import load_sample_crm
from crm_meta.services.dictionaries import Dictionaries
from crm_meta.testing import api_client, login, make_app

CUSTOMERS = 300
REP_PASSWORD = "rep-pass-2024-x"


def _load(app, customers: int, **kw):
    with app.app_context():
        build = app.extensions["crm"]
        out = load_sample_crm(build.db.session.connection(), build.models, customers=customers, **kw)
        build.db.session.commit()
        return out


def _rows(app, sql: str, **params):
    with app.app_context():
        return app.extensions["crm"].db.session.execute(text(sql), params).mappings().all()


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """An app with the plugin, a sales rep owning some customers, trained and scored."""
    app = make_app(tmp_path_factory.mktemp("lifecycle"), plugins=["crm_lifecycle"])
    runner = app.test_cli_runner()
    made = runner.invoke(args=["crm", "create-user", "rep1", "--role", "sales_rep", "--password", REP_PASSWORD])
    assert made.exit_code == 0, made.output
    rep_id = _rows(app, "SELECT id FROM ab_user WHERE username = 'rep1'")[0]["id"]
    _load(app, CUSTOMERS, owner_ids=[1, 1, rep_id], seed=11)
    train = runner.invoke(args=["crm", "lifecycle", "train"])
    score = runner.invoke(args=["crm", "lifecycle", "score"])
    return app, train, score, rep_id


def test_the_plugin_adds_fields_a_dictionary_and_an_entity(scored):
    app = scored[0]
    registry = app.extensions["crm"].registry
    customer = registry.entity("customer")
    for name in ("churn_risk", "lifecycle_stage", "predicted_value", "risk_explanation", "scored_at"):
        assert customer.field(name).readonly, name
    assert customer.field("churn_risk").min == 0 and customer.field("churn_risk").max == 1
    stage = registry.dictionary("lifecycle_stage")
    assert [i.code for i in stage.items] == list(stages.STAGES)
    assert all(i.label.zh and i.label.en and i.label.zh != i.label.en for i in stage.items)
    run = registry.entity("prediction_run")
    assert run.menu == "analytics" and run.label.zh == "预测运行记录"
    assert {"started_at", "model", "metrics", "features_used", "rows_scored", "duration_s", "status"} <= {
        f.name for f in run.fields}


def test_the_default_app_has_no_lifecycle_fields(tmp_path):
    app = make_app(tmp_path, plugins=[])
    assert not app.extensions["crm"].registry.entity("customer").has_field("churn_risk")


def test_train_and_score_fill_every_customer(scored):
    app, train, score, _rep = scored
    assert train.exit_code == 0, train.output
    assert "Trained:" in train.output and "ROC AUC" in train.output and "Traceback" not in train.output
    assert score.exit_code == 0, score.output
    assert f"Scored: {CUSTOMERS} customers" in score.output
    rows = _rows(app, "SELECT customer_type, churn_risk, lifecycle_stage, predicted_value, risk_explanation, "
                      "scored_at, version FROM customer")
    assert len(rows) == CUSTOMERS
    for r in rows:
        assert 0.0 <= float(r["churn_risk"]) <= 1.0
        assert r["lifecycle_stage"] in stages.STAGES
        assert float(r["predicted_value"]) >= 0
        assert r["risk_explanation"].count("(") == 3 and ("(+0." in r["risk_explanation"]
                                                         or "(-0." in r["risk_explanation"])
        assert r["scored_at"] is not None
        assert r["version"] == 1  # a derived score is not a user's change: no optimistic-locking conflict
        if r["customer_type"] == "churned":
            assert r["lifecycle_stage"] == "churned"
    risk = np.array([float(r["churn_risk"]) for r in rows])
    churned = np.array([r["customer_type"] == "churned" for r in rows])
    won = np.array([r["customer_type"] == "won" for r in rows])
    assert risk[churned].mean() > risk[won].mean() + 0.2  # the model learned the generated signal
    assert {r["lifecycle_stage"] for r in rows} >= {"new", "at_risk", "churned"}


def test_every_run_is_recorded(scored):
    app = scored[0]
    runs = _rows(app, "SELECT * FROM prediction_run ORDER BY id")
    assert [(r["task"], r["status"]) for r in runs[:2]] == [("train", "ok"), ("score", "ok")]
    train, score = runs[0], runs[1]
    metrics = json.loads(train["metrics"])
    assert 0.6 < metrics["roc_auc_mean"] <= 1.0 and metrics["folds"] == 5
    assert float(train["roc_auc"]) == pytest.approx(metrics["roc_auc_mean"], abs=1e-4)
    assert "days_since_last_follow_up" in train["features_used"] and "customer_type" not in train["features_used"]
    assert train["rows_trained"] == metrics["n_churned"] + metrics["n_retained"]
    assert score["rows_scored"] == CUSTOMERS and float(score["duration_s"]) >= 0
    scored_metrics = json.loads(score["metrics"])
    assert sum(scored_metrics["lifecycle_stages"].values()) == CUSTOMERS
    assert scored_metrics["value_method"] == "bgnbd+gammagamma"
    assert set(scored_metrics["value"]["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert train["run_no"].startswith("P") and "gradient boosting" in train["model"]


def test_the_explanation_is_on_the_customer_page(scored):
    app = scored[0]
    row = _rows(app, "SELECT id, risk_explanation FROM customer ORDER BY churn_risk DESC LIMIT 1")[0]
    client = login(app.test_client(), app)
    html = client.get(f"/customer/show/{row['id']}").get_data(as_text=True)
    assert "风险原因" in html and "生命周期预测" in html
    first_reason = row["risk_explanation"].split(" (")[0]
    assert first_reason.split(" ")[0] in html


def test_users_cannot_write_scores_or_runs(scored):
    app = scored[0]
    api = api_client(app)
    cid = _rows(app, "SELECT id, churn_risk FROM customer ORDER BY id LIMIT 1")[0]
    before = float(cid["churn_risk"])
    put = api.put(f"/api/v1/customer/{cid['id']}", json={"churn_risk": 0.01, "version": 1})
    assert put.status_code in (400, 422)
    assert float(_rows(app, "SELECT churn_risk FROM customer WHERE id = :i", i=cid["id"])[0]["churn_risk"]) == before
    refused = api.post("/api/v1/prediction_run/", json={})
    assert refused.status_code == 422 and "生命周期插件" in refused.json["message"]
    assert _rows(app, "SELECT count(*) AS n FROM prediction_run")[0]["n"] == 2  # train + score, nothing else


def test_the_dashboard_shows_risk_to_the_admin(scored):
    app = scored[0]
    client = login(app.test_client(), app)
    html = client.get("/").get_data(as_text=True)
    assert 'data-widget="lifecycle_risk"' in html and "客户流失风险" in html
    box = html[html.index('class="crm-lifecycle"'):]
    widget = box[:box.index("</table></div>")]
    assert "<script" not in widget and "http" not in widget and "src=" not in widget
    top = box[box.index("crm-lc-top"):box.index("</table>", box.index("crm-lc-top"))]
    shown = [int(x.split('"')[0]) for x in top.split('href="/customer/show/')[1:]]
    assert len(shown) == 10
    best = _rows(app, "SELECT id FROM customer WHERE lifecycle_stage != 'churned' "
                      "ORDER BY churn_risk DESC, id LIMIT 10")
    assert shown == [r["id"] for r in best]
    client.get("/lang/en")
    assert "customers most at risk" in client.get("/").get_data(as_text=True)


def test_a_sales_rep_sees_only_their_own_customers_at_risk(scored):
    app, _train, _score, rep_id = scored
    client = login(app.test_client(), app, "rep1", REP_PASSWORD)
    html = client.get("/").get_data(as_text=True)
    assert 'data-widget="lifecycle_risk"' in html
    box = html[html.index('class="crm-lifecycle"'):]
    top = box[box.index("crm-lc-top"):box.index("</table>", box.index("crm-lc-top"))]
    shown = [int(x.split('"')[0]) for x in top.split('href="/customer/show/')[1:]]
    mine = _rows(app, "SELECT id FROM customer WHERE owner_id = :o AND lifecycle_stage != 'churned' "
                      "ORDER BY churn_risk DESC, id LIMIT 10", o=rep_id)
    assert shown == [r["id"] for r in mine] and shown
    counts = [int(x.split("<")[0].replace(",", "")) for x in box.split('<td class="text-right">')[1:6]]
    owned = _rows(app, "SELECT count(*) AS n FROM customer WHERE owner_id = :o", o=rep_id)[0]["n"]
    assert sum(counts) == owned < CUSTOMERS  # the stage distribution counts their customers only


def test_the_nightly_job_trains_and_scores(scored):
    app = scored[0]
    ran = app.test_cli_runner().invoke(args=["crm", "jobs", "run", "lifecycle_nightly"])
    assert ran.exit_code == 0, ran.output
    assert "ran lifecycle_nightly (crm_lifecycle): ok — trained on" in ran.output and "scored 300" in ran.output
    assert _rows(app, "SELECT task FROM prediction_run ORDER BY id DESC LIMIT 1")[0]["task"] == "train_score"


def test_evaluate_on_public_data(scored, shared_data):
    runner = scored[0].test_cli_runner()
    out = runner.invoke(args=["crm", "lifecycle", "evaluate", "--dataset", "cdnow",
                              str(shared_data("cdnow", "cdnow_customers_summary.csv"))])
    assert out.exit_code == 0, out.output
    fig = json.loads(out.output)
    for key, published in (("r", 0.243), ("alpha", 4.414), ("a", 0.793), ("b", 2.426)):
        assert fig[key] == pytest.approx(published, rel=0.01)
    assert fig["p"] == pytest.approx(6.25, rel=0.02)
    telco = runner.invoke(args=["crm", "lifecycle", "evaluate", "--dataset", "telco", "--folds", "2",
                                str(shared_data("telco_churn", "Telco-Customer-Churn.csv"))])
    assert telco.exit_code == 0, telco.output
    assert {"roc_auc_mean", "roc_auc_std"} <= set(json.loads(telco.output)) and json.loads(telco.output)["folds"] == 2


def test_evaluate_errors_are_messages(scored, tmp_path):
    runner = scored[0].test_cli_runner()
    missing = runner.invoke(args=["crm", "lifecycle", "evaluate", "--dataset", "telco", str(tmp_path / "no.csv")])
    assert missing.exit_code == 1 and "Data not found" in missing.output and "Traceback" not in missing.output
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    wrong = runner.invoke(args=["crm", "lifecycle", "evaluate", "--dataset", "telco", str(bad)])
    assert wrong.exit_code == 1 and "missing columns" in wrong.output


def test_no_churned_customers_is_a_clear_message(tmp_path):
    app = make_app(tmp_path, plugins=["crm_lifecycle"])
    runner = app.test_cli_runner()
    no_model = runner.invoke(args=["crm", "lifecycle", "score"])
    assert no_model.exit_code == 1 and "No trained model yet" in no_model.output
    empty = runner.invoke(args=["crm", "lifecycle", "train"])
    assert empty.exit_code == 1 and "There are no customers" in empty.output
    _load(app, 60, owner_ids=[1], churned=False)
    out = runner.invoke(args=["crm", "lifecycle", "train"])
    assert out.exit_code == 1 and out.exception is not None and "Traceback" not in out.output
    assert "Cannot train: needs at least 5 churned customers" in out.output and "found 0 churned" in out.output
    assert "无法训练" in out.output
    runs = _rows(app, "SELECT task, status, message FROM prediction_run ORDER BY id")
    assert [(r["task"], r["status"]) for r in runs] == [("score", "failed"), ("train", "failed"), ("train", "failed")]
    assert "found 0 churned" in runs[-1]["message"]
    job = runner.invoke(args=["crm", "jobs", "run", "lifecycle_nightly"])
    assert job.exit_code == 1 and "FAILED lifecycle_nightly (plugin crm_lifecycle)" in job.output
    assert "found 0 churned" in job.output


def test_before_any_scoring_only_the_admin_is_shown_commands(tmp_path):
    app = make_app(tmp_path, plugins=["crm_lifecycle"])
    runner = app.test_cli_runner()
    assert runner.invoke(args=["crm", "create-user", "rep2", "--role", "sales_rep", "--password", REP_PASSWORD]
                         ).exit_code == 0
    admin = login(app.test_client(), app).get("/").get_data(as_text=True)
    assert "crm-lc-empty" in admin and "crm jobs run" in admin
    rep = login(app.test_client(), app, "rep2", REP_PASSWORD).get("/").get_data(as_text=True)
    assert "crm-lc-empty" in rep and "flask" not in rep and "每日评分" in rep


def _as_system(app, entity, rid, values):
    from crm_meta.services.records import Actor, RecordService

    with app.app_context():
        b = app.extensions["crm"]
        RecordService(b.db.session, b.models, entity, Actor(None)).update(rid, values)
        b.db.session.commit()


def test_features_are_aggregated_from_the_crm_tables(tmp_path):
    app = make_app(tmp_path, plugins=["crm_lifecycle"])
    api = api_client(app)
    cid = api.post("/api/v1/customer/", json={"name": "特征测试公司", "customer_type": "prospect", "industry": "finance",
                                               "contact_name": "王五", "contact_phone": "13700000000",
                                               "grade": "A"}).json["id"]
    other = api.post("/api/v1/customer/", json={"name": "无记录公司", "customer_type": "prospect", "industry": "retail",
                                                 "contact_name": "李四", "contact_phone": "13700000001"}).json["id"]
    now = datetime.now().replace(microsecond=0)
    for days in (5, 40, 200, 400):
        assert api.post("/api/v1/follow_up/", json={
            "customer": cid, "followed_at": (now - timedelta(days=days)).isoformat(), "method": "phone",
            "content": "回访"}).status_code == 201
    for sat, kind, prio in ((1, "complaint", "urgent"), (5, "praise", "normal")):
        assert api.post("/api/v1/feedback/", json={
            "customer": cid, "feedback_type": kind, "priority": prio, "description": "x", "satisfaction": sat,
            "feedback_at": (now - timedelta(days=10)).isoformat()}).status_code == 201
    api.post("/api/v1/demand/", json={"customer": cid, "demand_type": "product_inquiry", "description": "x",
                                      "priority": "high", "status": "pending"})
    _as_system(app, "customer", cid, {"customer_type": "won"})  # stages move by pipeline; history as data
    for stage, amount in (("proposal", 1000), ("won_paid", 5000), ("lost", 700)):
        opp = api.post("/api/v1/opportunity/", json={"name": stage, "customer": cid, "amount": amount})
        assert opp.status_code == 201, opp.json
        _as_system(app, "opportunity", opp.json["id"], {"stage": stage})
    with app.app_context():
        build = app.extensions["crm"]
        session = build.db.session
        table = build_features(session, build.models, Dictionaries.load(session, build.models.system["dict_item"]),
                               as_of=now)
    i, j = list(table.ids).index(cid), list(table.ids).index(other)
    col = table.columns
    assert (col["follow_ups_30d"][i], col["follow_ups_90d"][i], col["follow_ups_365d"][i]) == (1, 2, 3)
    assert col["days_since_last_follow_up"][i] == pytest.approx(5, abs=0.01)
    assert np.isnan(col["days_since_last_follow_up"][j]) and col["follow_ups_365d"][j] == 0
    assert (col["feedback_365d"][i], col["complaints_365d"][i], col["urgent_feedback_365d"][i]) == (2, 1, 1)
    assert col["avg_satisfaction"][i] == 3 and col["low_satisfaction_365d"][i] == 1 and np.isnan(col["avg_satisfaction"][j])
    assert (col["open_demands"][i], col["high_priority_open_demands"][i]) == (1, 1)
    assert (col["open_opportunities"][i], col["won_opportunities"][i], col["lost_opportunities"][i]) == (1, 1, 1)
    assert (col["open_amount"][i], col["won_amount"][i], col["max_open_probability"][i]) == (1000, 5000, 40)
    assert col["grade"][i] == "A" and table.customer_type[i] == "won" and "customer_type" not in col


def test_stage_rules():
    got = stages.lifecycle_stages(
        ["churned", "won", "prospect", "won", "won", "won", "intent"],
        [0.1, 0.7, 0.2, 0.1, 0.1, 0.1, 0.2],
        [900, 900, 900, 30, 200, 900, 900],
        [3, 3, 0, 1, 1, 2, 1],
        [0, 0, 0, 0, 0, 60, 0])
    assert list(got) == ["churned", "at_risk", "new", "new", "growing", "growing", "mature"]
    assert list(stages.risk_bands([0.1, 0.3, 0.5, 0.99])) == ["low", "medium", "high", "high"]


def test_reasons_read_well_in_both_languages():
    text_ = reasons.explanation(
        [Contribution("days_since_last_follow_up", 0.214), Contribution("complaints_365d", 0.12),
         Contribution("annual_revenue", -0.05)],
        {"days_since_last_follow_up": 102.0, "complaints_365d": 2.0, "annual_revenue": 3_000_000.0})
    assert text_ == ("102 天未跟进 No follow-up for 102 days (+0.21); 近一年 2 次投诉 2 complaints in 12 months "
                     "(+0.12); 年营业额 Annual revenue (-0.05)")
    assert "3,000,000" not in text_  # amounts are never quoted (hidden from some roles)
    assert reasons.describe("days_since_last_follow_up", float("nan")) == "从未跟进 Never followed up"
    assert reasons.describe("grade", "(missing)") == "客户等级未填 Grade not given"
