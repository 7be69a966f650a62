"""Drive the schema admin screens over HTTP (used by the multi-worker test)."""
from __future__ import annotations

import html
import re


def add_custom_field(browser, entity: str, name: str, zh: str, en: str) -> None:
    """Add a string field (a list column) on the model screen: submit the form, then confirm its plan."""
    token, _ = browser.csrf(f"/crm/schema/{entity}/")
    status, page, _ = browser.request(f"/crm/schema/{entity}/add", {
        "csrf_token": token, "name": name, "type": "string", "label_zh": zh, "label_en": en, "length": "64",
        "list": "y"})
    form = re.search(r'<form[^>]*class="crm-plan-confirm"[^>]*>(.*?)</form>', page, re.S)
    assert status == 200 and form, (status, page[page.find("crm-schema"):][:1000])
    fields = {k: html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"',
                                                         form.group(1))}
    status, body, _ = browser.request("/crm/schema/apply", fields)
    assert status == 302, (status, body[:1000])
