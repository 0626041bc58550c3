"""The public API: ``pytest_wsgi502.__all__`` is pinned, every name resolves (lazily) to the type a user touches,
and importing the package loads none of the modules behind it."""

import subprocess
import sys
import typing

import pytest

import pytest_wsgi502

PUBLIC = [
    "Cell", "CellRun", "ConfigError", "Endpoint", "FastTransport", "LoadSpec", "MySQLInfo", "Result", "SLO", "Stats",
    "Target", "WsgiLoadFactory", "WsgiServerFactory", "__version__", "load_matrix", "parse_slos", "verdict",
]


def test_all_is_pinned():
    assert sorted(pytest_wsgi502.__all__) == sorted(PUBLIC)
    assert len(set(pytest_wsgi502.__all__)) == len(pytest_wsgi502.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_each_name_resolves(name):
    value = getattr(pytest_wsgi502, name)
    assert value is not None
    if name != "__version__":
        assert value.__name__ == name  # the object itself, not a module or an alias
        assert value.__module__.startswith("pytest_wsgi502.")


def test_from_import_star_gives_every_public_name():
    namespace: dict[str, object] = {}
    exec("from pytest_wsgi502 import *", namespace)
    assert set(PUBLIC) <= set(namespace)


def test_types_are_the_ones_the_fixtures_use():
    from pytest_wsgi502 import fixtures, results

    assert pytest_wsgi502.Result is results.Result
    assert pytest_wsgi502.CellRun is results.CellRun
    assert issubclass(pytest_wsgi502.ConfigError, ValueError)
    # the fixtures name heavy types only for type checkers: resolve them with the public names in scope
    scope = {**vars(fixtures), **{n: getattr(pytest_wsgi502, n) for n in PUBLIC}}
    hints = typing.get_type_hints(fixtures.wsgi_cell_run.__wrapped__, globalns=scope)
    assert hints["return"] is pytest_wsgi502.CellRun
    assert hints["wsgi_database"] == (pytest_wsgi502.MySQLInfo | None)
    load = typing.get_type_hints(fixtures.wsgi_load.__wrapped__, globalns=scope)
    assert load["return"] is pytest_wsgi502.WsgiLoadFactory


def test_fixture_protocols_accept_the_factories():
    """The Protocols are runtime-checkable shapes of a callable with the documented parameters."""
    import inspect

    server = inspect.signature(pytest_wsgi502.WsgiServerFactory.__call__)
    assert list(server.parameters) == ["self", "config", "name", "overrides"]
    load = inspect.signature(pytest_wsgi502.WsgiLoadFactory.__call__)
    assert list(load.parameters) == ["self", "target", "slo", "verify", "profile"]


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        pytest_wsgi502.Nope  # noqa: B018


def test_import_is_cheap():
    """Importing the package (and dir() on it) loads no submodule: every public name is resolved on first use."""
    code = ("import sys, pytest_wsgi502; dir(pytest_wsgi502); "
            "print(sorted(m for m in sys.modules if m.startswith('pytest_wsgi502.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
