"""A pytest plugin that turns CPU isolation on for a matrix run, for the isolation benchmark and its test:

    WSGI502_BENCH_ISOLATION=auto python -m pytest sample_project --wsgi-matrix -p pytest_wsgi502.bench.isolate

It does, from outside, what the harness does once the ``--wsgi-isolation`` setting is wired into the session
(``services/isolation.py``): one ``Isolation`` for the session, MariaDB and every cell's server placed inside,
each cell's proxy and this process (the engine) outside, everything released at the end. The mechanism and
the CPU sets are written to ``$WSGI502_BENCH_ISOLATION_OUT`` (JSON) when set. Unset or ``off``: nothing changes.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from pytest_wsgi502.services import isolation

_ISO: isolation.Isolation | None = None


def pytest_configure(config: Any) -> None:  # pytest.Config: this package never imports pytest
    global _ISO
    mode = os.environ.get("WSGI502_BENCH_ISOLATION", "off")
    if mode == "off" or _ISO is not None:
        return
    _ISO = iso = isolation.start(mode)
    from pytest_wsgi502 import cellrun
    from pytest_wsgi502.servers.local import placed_runner
    from pytest_wsgi502.services import mysql

    make_server, proxy_cls = getattr(cellrun, "make_server"), getattr(cellrun, "LocalProxy")  # noqa: B009
    mysql_init = mysql.LocalMySQL.__init__

    @functools.wraps(make_server)
    def placed_make_server(*args: Any, **kw: Any) -> Any:
        kw.setdefault("runner", placed_runner(iso.inside))
        return make_server(*args, **kw)

    class PlacedProxy(proxy_cls):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            kw.setdefault("place", iso.outside)
            super().__init__(*args, **kw)

    def placed_mysql_init(self: Any, *args: Any, **kw: Any) -> None:
        kw.setdefault("place", iso.inside)
        mysql_init(self, *args, **kw)

    setattr(cellrun, "make_server", placed_make_server)  # noqa: B010
    setattr(cellrun, "LocalProxy", PlacedProxy)  # noqa: B010
    setattr(mysql.LocalMySQL, "__init__", placed_mysql_init)  # noqa: B010
    if out := os.environ.get("WSGI502_BENCH_ISOLATION_OUT"):
        Path(out).write_text(json.dumps(iso.describe()) + "\n")


def pytest_unconfigure(config: Any) -> None:
    global _ISO
    if _ISO is not None:
        from pytest_wsgi502.services.process import stop_all

        stop_all()  # every service first: a cgroup is removable once empty
        left = _ISO.release()
        _ISO = None
        if left:
            print(f"wsgi502 isolation: could not remove {', '.join(left)}")
