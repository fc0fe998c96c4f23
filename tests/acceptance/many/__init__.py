"""Workflows, a runner app and a client script for the many-processes acceptance tests."""
