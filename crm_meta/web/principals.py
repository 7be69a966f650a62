"""Who a request's user is and what their roles may do, kept across requests while the auth epoch holds.

Each request of a signed-in user used to cost three statements before its own work: the user with
their roles and groups, their roles' permissions on the view, and their department with the
department tree (for the access policy). None of that changes between two requests unless one of
the tables behind it changes — and then the auth epoch changes (``crm_meta.db.auth_epoch``:
database triggers, whoever writes). So an app keeps, per epoch, the users (``Who``), the grants of
each role set on each view and the compiled policy of each user; a request whose epoch is the one
the cache was filled under reads them from memory. The epoch itself rides on the per-request read
of ``crm_meta.web.live`` (the same statement as the schema generation), so a request that finds
all in the cache runs no statement for who it is.

Nothing here decides anything: the checks stay in ``crm_meta.web.security`` (Flask-AppBuilder's
order and answers) and ``crm_meta.services.policy``; this only remembers what they read.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, has_request_context, request
from sqlalchemy import text

from crm_meta.db.auth_epoch import READ_SQL

ENVIRON_KEY = "crm.auth_epoch"  # set by crm_meta.web.live from its per-request state read
MAX_ENTRIES = 20_000  # a bound on memory: past it the cache starts over (each entry is small)
MAX_PLANS = 512  # list plans kept, least recently used dropped first (~18 MB at most)
_UNSET = object()


@dataclass(frozen=True)
class Who:
    """A signed-in user as the checks need them: identity, whether active, their roles."""

    id: int
    username: str
    active: bool
    role_ids: tuple[int, ...]
    role_names: frozenset[str]

    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.active


class Plans:
    """The most recently used list plans (``crm_meta.web.datamodel.PagePlan``), at most ``size``:
    a plan holds its statements (~36 KB), and users × filters × search terms are endless."""

    def __init__(self, size: int = MAX_PLANS) -> None:
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
            return found

    def put(self, key, plan) -> None:
        with self._lock:
            self._data[key] = plan
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class AuthCache:
    """One app's memory of users, grants and policies — and the list plans built under those
    policies — valid for one auth epoch at a time."""

    def __init__(self) -> None:
        self._state: tuple[str | None, dict, Plans] = (None, {}, Plans())

    def _current(self, epoch: str) -> tuple[str | None, dict, Plans]:
        state = self._state
        if state[0] != epoch or len(state[1]) > MAX_ENTRIES:
            state = self._state = (epoch, {}, Plans())  # one assignment: readers see the old or the new
        return state

    def entries(self, epoch: str | None) -> dict | None:
        """The entries filled under ``epoch`` (a new, empty dict when the epoch moved on); None
        when the epoch is unknown (nothing may be kept across requests then)."""
        return None if epoch is None else self._current(epoch)[1]

    def plans(self) -> Plans | None:
        """The list plans of the request's epoch (None: nothing is kept across requests — no
        epoch, or a write, which may have changed rights it has not committed yet)."""
        epoch = request_epoch()
        return None if epoch is None or not reading() else self._current(epoch)[2]

    def get(self, key: Any, load):
        """The value of ``key`` under the request's epoch; ``load()`` computes it on a miss (and
        on every call when there is no epoch). Only a read keeps what it loaded."""
        entries = self.entries(request_epoch())
        if entries is None:
            return load()
        value = entries.get(key, _UNSET)
        if value is _UNSET:
            value = load()
            if reading():
                entries[key] = value
        return value


def request_epoch() -> str | None:
    """This request's auth epoch: what crm_meta.web.live read before dispatching it, else read once
    here (None outside a request, or when the database has no epoch)."""
    if not has_request_context():
        return None
    epoch = request.environ.get(ENVIRON_KEY, _UNSET)
    if epoch is _UNSET:
        epoch = g.get("crm_auth_epoch", _UNSET)
        if epoch is _UNSET:
            try:
                epoch = current_app.extensions["crm"].db.session.execute(text(READ_SQL)).scalar()
            except Exception:  # noqa: BLE001 — no state table yet: nothing is kept
                epoch = None
            g.crm_auth_epoch = epoch
    return epoch


def who_of(user, roles) -> Who:
    return Who(int(user.id), user.username, bool(user.is_active),
               tuple(sorted({r.id for r in roles})), frozenset(r.name for r in roles))


def bearer_claims() -> dict | None:
    """The claims of the request's ``Authorization: Bearer <token>`` when it is a valid access
    token (signature, expiry and the app's JWT settings checked by flask_jwt_extended); None for
    anything else — the caller then takes flask_jwt_extended's own path, which says why."""
    from flask_jwt_extended import decode_token
    from flask_jwt_extended.config import config
    from flask_jwt_extended.default_callbacks import (
        default_blocklist_callback,
        default_decode_key_callback,
        default_token_verification_callback,
    )

    manager = current_app.extensions["flask-jwt-extended"]
    if manager._token_in_blocklist_callback is not default_blocklist_callback \
            or manager._token_verification_callback is not default_token_verification_callback \
            or manager._decode_key_callback is not default_decode_key_callback:
        return None  # revocation, custom checks or keys configured: flask_jwt_extended's path runs them
    if list(config.token_location) != ["headers"] or config.identity_claim_key != "sub" \
            or config.header_name != "Authorization" \
            or config.header_type != "Bearer" or request.method in config.exempt_methods:
        return None
    parts = request.headers.get("Authorization", "").split()
    if len(parts) != 2 or parts[0] != "Bearer":
        return None
    leeway = config.leeway
    leeway = leeway.total_seconds() if hasattr(leeway, "total_seconds") else float(leeway or 0)
    claims = current_app.extensions["crm"].tokens.claims(parts[1], decode_token, leeway)
    if claims is None or claims.get("type") != "access":
        return None
    return claims


class TokenCache:
    """Tokens this app has verified, with their claims: a client sends the same token with every
    request until it expires, and verifying it again (two JSON decodes and an HMAC in
    flask_jwt_extended) was a tenth of a list request. The same bytes verify the same way under the
    same app settings; what depends on the time — expiry and not-before — is checked at every use."""

    MAX = 10_000

    def __init__(self) -> None:
        self._claims: dict[str, dict] = {}

    def claims(self, token: str, decode, leeway: float = 0) -> dict | None:
        """The claims of ``token`` when it verifies and is within its validity now, else None."""
        found = self._claims.get(token)
        now = time.time()
        if found is not None:
            if found.get("exp", now + 1) + leeway > now and found.get("nbf", now) - leeway <= now:
                return found
            self._claims.pop(token, None)
            return None
        try:
            found = decode(token)
        except Exception:  # noqa: BLE001 — invalid, expired, malformed: not ours to explain
            return None
        if len(self._claims) >= self.MAX:
            self._claims.clear()
        self._claims[token] = found
        return found


def reading() -> bool:
    """Whether what is loaded now may be kept for others: only in a read (GET/HEAD). A write may
    have changed — not yet committed, perhaps to be rolled back — the very rows it then reads, and
    the epoch moves only when such a change commits."""
    return has_request_context() and request.method in ("GET", "HEAD")
