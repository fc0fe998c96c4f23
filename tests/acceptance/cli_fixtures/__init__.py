"""Workflow modules the CLI acceptance tests import by name, as a user's project would."""
