"""Every page of the admin's menu opens and loads nothing from the internet (scripts, styles, images
and frames come from the CRM itself)."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

MENU_LINK = re.compile(r'<a[^>]+href="(/[^"#]*)"[^>]*>', re.I)
RESOURCE = re.compile(r'<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)\s*=\s*["\']([^"\']+)', re.I)


def _menu_links(html: str) -> set[str]:
    nav = html.split('class="navbar', 1)[1].split("</nav>", 1)[0]
    return {href for href in MENU_LINK.findall(nav) if "/logout" not in href and "/lang/" not in href}


def test_every_menu_page_opens_and_loads_nothing_from_outside(client):
    links = _menu_links(client.get("/").get_data(as_text=True))
    assert "/customer/list/" in links and "/users/list/" in links, sorted(links)
    outside = {}
    for href in sorted(links):
        resp = client.get(href, follow_redirects=True)
        assert resp.status_code == 200, (href, resp.status_code)
        found = [u for u in RESOURCE.findall(resp.get_data(as_text=True))
                 if re.match(r"(?:https?:)?//", u) and not re.match(r"(?:https?:)?//(?:localhost|127\.0\.0\.1)\b", u)]
        if found:
            outside[href] = found
    assert not outside, outside


def test_fabs_user_statistics_chart_is_not_served(client):
    """It drew with Google Charts from gstatic.com (blocked by the CSP: an empty page)."""
    assert client.get("/userstatschartview/chart/").status_code == 404
