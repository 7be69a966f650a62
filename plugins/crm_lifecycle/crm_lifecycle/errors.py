"""The one error users of crm_lifecycle see: a message in Chinese and English, never a traceback."""
from __future__ import annotations

__all__ = ["LifecycleError"]


class LifecycleError(Exception):
    """Something the admin can fix (no data to train on, no model yet …); ``str()`` gives zh + en."""

    def __init__(self, zh: str, en: str):
        super().__init__(f"{zh} / {en}")
        self.zh, self.en = zh, en
