"""crm_meta — a low-code CRM engine driven by a YAML data dictionary.

Plugins mark their hook implementations with ``crm_meta.hookimpl`` (see crm_meta/hookspecs.py and
docs/plugins.md).
"""

__version__ = "0.1.0"

from crm_meta.plugins import hookimpl  # noqa: E402  (after __version__: plugins reads it)

__all__ = ["__version__", "hookimpl"]
