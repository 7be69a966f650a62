"""crm_meta — a low-code CRM engine driven by a YAML data dictionary."""

__version__ = "0.1.0"
