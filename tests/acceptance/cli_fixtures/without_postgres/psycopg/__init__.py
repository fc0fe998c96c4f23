"""Stands in for the PostgreSQL driver where it is not installed: put this directory first on
PYTHONPATH and `import psycopg` fails as it does without the `postgres` extra."""

raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")
