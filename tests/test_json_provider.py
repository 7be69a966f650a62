"""Responses are written by orjson (``crm_meta.web.json_provider``): the same JSON, as data and in key
order, as Flask's own provider writes — for any JSON-like value (hypothesis) and for the values Flask
converts (dates, decimals, dataclasses, markup, lazy labels)."""
from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from crm_meta.web.json_provider import OrjsonProvider


def _providers(debug: bool = False):
    app = Flask("json_provider_test")
    app.debug = debug
    return app, OrjsonProvider(app), DefaultJSONProvider(app)


def _pairs(text: str):
    """The JSON as data with every object's keys in their written order."""
    return json.loads(text, object_pairs_hook=lambda pairs: ("object", pairs))


_scalars = (st.none() | st.booleans() | st.text() | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False))
_values = st.recursive(_scalars, lambda children: st.lists(children, max_size=5)
                       | st.dictionaries(st.text(max_size=8), children, max_size=5), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_any_json_value_reads_back_as_flask_writes_it(value):
    _, fast, flask = _providers()
    assert _pairs(fast.dumps(value)) == _pairs(flask.dumps(value))


def test_the_values_flask_converts_are_converted_the_same():
    @dataclasses.dataclass
    class Point:
        x: int
        label: str

    from flask_babel import LazyString

    value = {
        "when": datetime(2026, 11, 24, 8, 30, 1, tzinfo=timezone.utc), "naive": datetime(2026, 1, 2, 3, 4, 5),
        "day": date(1999, 12, 31), "money": Decimal("1234.50"), "point": Point(1, "甲"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"), "html": Markup("<b>客户</b>"),
        "label": LazyString(lambda: "客户管理"), "nested": [{"b": 1, "a": [Decimal("0.1")]}],
    }
    app, fast, flask = _providers()
    with app.app_context():
        assert json.loads(fast.dumps(value)) == json.loads(flask.dumps(value))
        assert json.loads(fast.dumps(value))["money"] == "1234.50"  # as Flask: a decimal travels as text
        assert json.loads(fast.dumps(value))["day"] == "Fri, 31 Dec 1999 00:00:00 GMT"


def test_an_integer_beyond_64_bits_and_custom_arguments_still_write():
    _, fast, flask = _providers()
    assert json.loads(fast.dumps({"n": 2 ** 80})) == {"n": 2 ** 80}
    assert fast.dumps({"b": 1, "a": 2}, indent=4) == flask.dumps({"b": 1, "a": 2}, indent=4)


def test_responses_are_json_with_a_newline_and_indented_in_debug():
    app, fast, _ = _providers()
    with app.app_context():
        resp = fast.response(name="客户", count=2)
    assert resp.mimetype == "application/json"
    assert resp.get_data() == '{"count":2,"name":"客户"}\n'.encode()
    app, fast, _ = _providers(debug=True)
    with app.app_context():
        text = fast.response(b=1, a=[1]).get_data(as_text=True)
    assert text.startswith('{\n  "a": [\n') and json.loads(text) == {"a": [1], "b": 1}


def test_the_api_answers_through_it(app, api):
    assert isinstance(app.json, OrjsonProvider)
    resp = api.get("/api/v1/customer/?q=(page_size:3)")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    body = resp.json
    assert len(body["result"]) == len(body["ids"]) <= 3
