"""The only package that imports Flask-AppBuilder and WTForms: thin views over the services."""
