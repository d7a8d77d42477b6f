"""pytest plugin: fixtures shaped like pytest-aiohttp's ``aiohttp_server`` and ``aiohttp_client``.

Opt-in. trio_ws registers this module through a ``pytest11`` entry point, but
it only adds an ini option until a project asks for the fixtures, with either

* ``trio_ws_fixtures = true`` in its pytest configuration, or
* ``pytest_plugins = ["trio_ws.pytest_fixtures"]`` in a ``conftest.py``.

So a project that also uses pytest-aiohttp keeps that plugin's fixtures of the
same names. See :mod:`trio_ws.pytest_fixtures` for the fixtures themselves.
"""

from __future__ import annotations

import pytest

__all__ = ["pytest_addoption", "pytest_configure"]

_INI = "trio_ws_fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the ``trio_ws_fixtures`` ini option (off by default)."""
    parser.addini(
        _INI,
        "provide trio_ws's aiohttp_server / aiohttp_client fixtures (pytest-trio tests)",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register :mod:`trio_ws.pytest_fixtures` when the project opted in."""
    if config.getini(_INI) and not config.pluginmanager.has_plugin("trio_ws.pytest_fixtures"):
        from . import pytest_fixtures

        config.pluginmanager.register(pytest_fixtures, "trio_ws.pytest_fixtures")
