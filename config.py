"""Project configuration for the CRM; see crm_meta/settings.py for every key and its default.

Put secrets in instance/config.py or CRM_* environment variables, never here:
  CRM_DATABASE_URL   e.g. postgresql+psycopg://crm@127.0.0.1/crm (default: SQLite in instance/crm.db)
  CRM_SCHEMA_PATH    data dictionary directories separated by ':' (default: schemas/)
  CRM_SECRET_KEY     session signing key (default: generated into instance/secret_key)
  CRM_ADMIN_PASSWORD the first admin's password (default: generated and printed once by `crm init`)
"""

APP_NAME = "crm_meta CRM"
