"""Flask's JSON provider with orjson writing the JSON: the same output as Flask's
``DefaultJSONProvider`` as data (Flask's conversions of dates, decimals, dataclasses and
``__html__`` objects, sorted keys), in a tenth of the time — a list page's JSON had cost about a
tenth of the request (bench/list.py).

Two differences, both still valid JSON: text is written as UTF-8 rather than ``\\uXXXX`` escapes
(a Chinese name takes 3 bytes instead of 6), and a float that is not a number is ``null`` rather
than the invalid ``NaN``. Whatever orjson does not write (integers beyond 64 bits, a non-default
``json.dumps`` argument such as ``cls``) goes to Flask's provider as before.
"""
from __future__ import annotations

import typing as t

import orjson
from flask.json.provider import DefaultJSONProvider

# dates, datetimes, times and dataclasses go to ``default`` (Flask's conversions); keys that are
# not strings are written as strings, as the json module does
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS
_COMPACT = (",", ":")


class OrjsonProvider(DefaultJSONProvider):
    def _encode(self, obj: t.Any, indent: bool) -> bytes | None:
        option = _OPTIONS | (orjson.OPT_SORT_KEYS if self.sort_keys else 0) | (orjson.OPT_INDENT_2 if indent else 0)
        try:
            return orjson.dumps(obj, default=self.default, option=option)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, or a type nobody converts
            return None

    @staticmethod
    def _plain(kwargs: dict) -> bool | None:
        """Whether ``kwargs`` ask for nothing orjson would write differently: None if they do, else
        whether they ask for an indented text."""
        kwargs = dict(kwargs)
        indent = kwargs.pop("indent", None)
        separators = kwargs.pop("separators", None)
        kwargs.pop("ensure_ascii", None)  # (both write valid JSON; orjson writes UTF-8)
        if kwargs or indent not in (None, 2) or (separators is not None and indent is None
                                                 and tuple(separators) != _COMPACT):
            return None
        return indent is not None

    def dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
        indent = self._plain(kwargs)
        if indent is not None:
            data = self._encode(obj, indent)
            if data is not None:
                return data.decode()
        return super().dumps(obj, **kwargs)

    def response(self, *args: t.Any, **kwargs: t.Any):
        obj = self._prepare_response_obj(args, kwargs)
        indent = (self.compact is None and self._app.debug) or self.compact is False
        data = self._encode(obj, indent)
        if data is None:
            return super().response(obj)
        return self._app.response_class(data + b"\n", mimetype=self.mimetype)
