"""Registers tests/lab/fixtures.py when the top-level conftest has not (running tests/lab alone)."""

from . import fixtures as _fixtures


def pytest_configure(config):
    pm = config.pluginmanager
    if not pm.is_registered(_fixtures) and pm.get_plugin(_fixtures.__name__) is None:
        pm.register(_fixtures, _fixtures.__name__)
