"""Domain services: they take a SQLAlchemy session and know nothing of the web."""
