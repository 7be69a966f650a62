"""Tables built from the metadata, and schema changes planned and applied through Alembic."""
