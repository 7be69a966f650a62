"""The entity APIs verify a bearer token once per request (crm_meta.web.security.protect) instead of
twice (FAB's ``protect``): every outcome must stay FAB's — the same status and body for no token, a
malformed, forged, expired or refresh token, a token of a deactivated or deleted user, a token
without the permission, and a good one. Compared, request by request, with an endpoint of the same
permission guarded by FAB's own decorator. SQLite and PostgreSQL.
"""
from __future__ import annotations

import secrets
import time
from datetime import timedelta

import pytest
from flask_appbuilder.api import BaseApi, expose
from flask_appbuilder.security.decorators import permission_name
from flask_appbuilder.security.decorators import protect as fab_protect
from support import ADMIN_PASSWORD

from crm_meta.web.security import BearerFirstApi
from crm_meta.web.views import METHOD_PERMISSIONS, PERMISSIONS


class FabGuarded(BearerFirstApi, BaseApi):
    """The contact list's permission behind FAB's decorator."""

    resource_name = "fab_guarded"
    class_permission_name = "contact"
    method_permission_name = METHOD_PERMISSIONS
    base_permissions = list(PERMISSIONS)

    @expose("/", methods=["GET"])
    @fab_protect()
    @permission_name("get")
    def get_list(self):
        return self.response(200, ok=True)


@pytest.fixture
def app(make_app):
    app = make_app(CRM_DISABLED_PLUGINS="crm_lifecycle")
    with app.app_context():
        app.appbuilder.add_api(FabGuarded)
    return app


def _token(app, username, password):
    resp = app.test_client().post("/api/v1/security/login", json={"username": username, "password": password,
                                                         "provider": "db", "refresh": True})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json["access_token"], resp.json["refresh_token"]


def test_outcomes_are_fabs(app):
    from flask_jwt_extended import create_access_token

    client = app.test_client()
    sm = app.appbuilder.sm
    password = secrets.token_urlsafe(12) + "a1"
    with app.app_context():
        for name, role in (("marketer", "marketing"), ("leaver", "sales_rep"), ("gone", "sales_rep")):
            assert sm.add_user(name, name, "T", f"{name}@t.invalid", sm.find_role(role), password)
        admin_id = sm.find_user(username="admin").id
        expired = create_access_token(identity=str(admin_id), fresh=True, expires_delta=timedelta(seconds=-5))
        forged = create_access_token(identity=str(admin_id), fresh=True)[:-4] + "abcd"
    admin, admin_refresh = _token(app, "admin", ADMIN_PASSWORD)
    marketer, _ = _token(app, "marketer", password)  # may not read contacts
    leaver, _ = _token(app, "leaver", password)
    gone, _ = _token(app, "gone", password)
    with app.app_context():
        sm.find_user(username="leaver").active = False
        sm.session.delete(sm.find_user(username="gone"))
        sm.session.commit()

    cases = {
        "no token": {},
        "admin": {"Authorization": f"Bearer {admin}"},
        "no permission": {"Authorization": f"Bearer {marketer}"},
        "deactivated user": {"Authorization": f"Bearer {leaver}"},
        "deleted user": {"Authorization": f"Bearer {gone}"},
        "expired": {"Authorization": f"Bearer {expired}"},
        "forged signature": {"Authorization": f"Bearer {forged}"},
        "malformed": {"Authorization": "Bearer not-a-token"},
        "empty bearer": {"Authorization": "Bearer "},
        "refresh token": {"Authorization": f"Bearer {admin_refresh}"},
        "other scheme": {"Authorization": f"Basic {admin}"},
    }
    seen = {}
    for case, headers in cases.items():
        ours = client.get("/api/v1/contact/", headers=headers)
        fabs = client.get("/api/v1/fab_guarded/", headers=headers)
        assert ours.status_code == fabs.status_code, (case, ours.get_data(as_text=True), fabs.get_data(as_text=True))
        if ours.status_code != 200:
            assert ours.json == fabs.json, case
        seen[case] = ours.status_code
    assert seen["admin"] == 200 and seen["no permission"] == 403
    assert seen["no token"] == 401 and seen["expired"] == 401 and seen["deactivated user"] == 401
    assert all(seen[c] in (401, 422) for c in ("forged signature", "malformed", "refresh token", "deleted user"))


def test_one_token_verification_per_request_and_the_user_loaded_once(app, monkeypatch):
    """What made FAB's decorator slow: the token decoded and the user loaded twice per request. Now a
    read verifies a token the first time it is seen, and loads its user on the first request of the
    auth epoch (crm_meta.web.principals)."""
    import flask_jwt_extended

    client = app.test_client()
    token, _ = _token(app, "admin", ADMIN_PASSWORD)
    calls = {"decode": 0, "user": 0}
    decode, load = flask_jwt_extended.decode_token, type(app.appbuilder.sm).get_user_by_id

    def counting_decode(*args, **kwargs):
        calls["decode"] += 1
        return decode(*args, **kwargs)

    def counting_load(self, pk):
        calls["user"] += 1
        return load(self, pk)

    monkeypatch.setattr("flask_jwt_extended.decode_token", counting_decode)
    monkeypatch.setattr(type(app.appbuilder.sm), "get_user_by_id", counting_load)
    resp = client.get("/api/v1/customer/", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    assert calls == {"decode": 1, "user": 1}
    resp = client.get("/api/v1/customer/", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    assert calls == {"decode": 1, "user": 1}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_remembered_token_is_refused_once_it_expires(app):
    from flask_jwt_extended import create_access_token

    client = app.test_client()
    with app.app_context():
        admin_id = app.appbuilder.sm.find_user(username="admin").id
        # (the claim `exp` is in whole seconds: a 2 s token lives at least 1 s)
        token = create_access_token(identity=str(admin_id), fresh=True, expires_delta=timedelta(seconds=2))
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/customer/", headers=headers).status_code == 200
    assert client.get("/api/v1/customer/", headers=headers).status_code == 200  # verified before: remembered
    time.sleep(2.3)
    resp = client.get("/api/v1/customer/", headers=headers)
    assert resp.status_code == 401 and "expired" in resp.get_data(as_text=True).lower()
