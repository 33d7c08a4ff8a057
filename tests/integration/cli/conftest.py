"""The `live` daemon fixture of test_cli.py, shared with the other CLI test modules."""

from tests.integration.cli.test_cli import live  # noqa: F401 - a fixture, used by name
