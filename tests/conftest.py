"""Shared test set-up. Fixture modules of the real components are plugins listed here."""

pytest_plugins = ["tests.lab.fixtures"]
