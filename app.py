"""Entry point: `flask --app app run`, `flask --app app crm …`, `gunicorn 'app:create_app()'`."""
from crm_meta.web.factory import create_app

__all__ = ["create_app"]
