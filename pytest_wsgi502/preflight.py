"""Checks before any process starts, so a missing binary is one line, not a failed cell per cell.

Raises ``ConfigError``; the plugin shows it as a usage error. Never runs for ``--help`` (the plugin skips it)."""

from __future__ import annotations

import sys
from pathlib import Path

from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.config.settings import EffectiveSettings
from pytest_wsgi502.config.values import ConfigError, shown

INSTALL_HINT = "run `bash bin/dev matrix` once, or apt-get install mariadb-server nginx-light"


def check(settings: EffectiveSettings, cells: list[Cell], chdir: Path, backend: str = "local") -> None:
    """``backend`` is the resolved one (``auto`` already decided): containers need no local MySQL or servers,
    only the proxy, which stays on the host."""
    from pytest_wsgi502.proxy import find_nginx
    from pytest_wsgi502.servers import binary_for
    from pytest_wsgi502.services.mysql import find_mysqld

    local = backend == "local"
    if local and find_mysqld(settings.mysqld) is None:
        where = f"--wsgi-mysqld={settings.mysqld} is not executable" if settings.mysqld else \
            "mariadbd/mysqld not found on PATH or in /usr/sbin"
        raise ConfigError(f"{where}: {INSTALL_HINT}, or pass --wsgi-mysqld PATH")
    if find_nginx(settings.nginx) is None:
        where = f"--wsgi-nginx={settings.nginx} is not executable" if settings.nginx else \
            "nginx not found on PATH or in /usr/sbin"
        raise ConfigError(f"{where}: {INSTALL_HINT}, or pass --wsgi-nginx PATH")
    for server in sorted({c.server for c in cells}):
        if local and binary_for(server) is None:
            raise ConfigError(
                f"{server} not found next to {Path(sys.executable).parent} or on PATH: "
                f"pip install {server} (or the plugin with its servers extra: "
                "pip install '/path/to/pytest-wsgi502[servers]')"
            )
    if not chdir.is_dir():
        raise ConfigError(f"wsgi_chdir {shown(str(chdir), 200)} is not a directory (it is where the servers import "
                          "the app)")
    bad = {c.name: _unknown_gunicorn_options(c) for c in cells if c.server == "gunicorn" and c.options}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        name, keys = next(iter(bad.items()))
        raise ConfigError(f"cell {name!r}: unknown gunicorn setting(s) {', '.join(keys)} in options")


def _unknown_gunicorn_options(cell: Cell) -> list[str]:
    from pytest_wsgi502.servers.gunicorn import validate_options

    try:
        return validate_options(dict(cell.options))
    except ImportError:
        return []
