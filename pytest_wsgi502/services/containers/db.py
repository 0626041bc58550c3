"""The session's MySQL in a container: testcontainers' ``MySqlContainer`` on the session network, its port
published on 127.0.0.1 only, with per-session passwords; ready when ``SELECT 1`` answers as the app's user."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from pytest_wsgi502.services.mysql import DB_NAME, DB_USER, MySQLInfo, new_password
from pytest_wsgi502.services.process import ServiceError, wait_until


@contextlib.contextmanager
def testcontainers_settings(docker_host: str) -> Iterator[dict[str, Any]]:
    """What testcontainers needs, through its config API instead of ``os.environ`` (which every server started
    later would inherit): Ryuk off for the duration (it needs a registry image; we clean up by label), and
    the engine's URL as the client's own environment (``docker_client_kw``). testcontainers' client writes a
    ``DOCKER_HOST`` it found elsewhere (a docker context) into ``os.environ``: that is undone on the way out."""
    from testcontainers.core.config import testcontainers_config

    had = "DOCKER_HOST" in os.environ
    saved_host = os.environ.get("DOCKER_HOST")
    saved_ryuk = testcontainers_config.ryuk_disabled
    testcontainers_config.ryuk_disabled = True
    try:
        yield {"environment": {"DOCKER_HOST": docker_host}, "timeout": 300}
    finally:
        testcontainers_config.ryuk_disabled = saved_ryuk
        if had:
            os.environ["DOCKER_HOST"] = saved_host or ""
        else:
            os.environ.pop("DOCKER_HOST", None)


def start(docker_host: str, image: str, name: str, labels: dict[str, str], network: str, port: int,
          timeout: float = 180.0) -> tuple[Any, MySQLInfo]:
    """Start MySQL ``image`` as ``name`` on ``network``, published on 127.0.0.1:``port``; wait for SELECT 1.
    Returns (the testcontainers container, the session's ``MySQLInfo``). A failed start is a ``ServiceError``
    with the container's last log lines; what it left carries ``labels``, so the session removes it."""
    from testcontainers.community.mysql import MySqlContainer

    # per-session passwords, like the local backend; the container's port is published on 127.0.0.1 only
    password, root_password = new_password(), new_password()
    with testcontainers_settings(docker_host) as client_kw:
        c = MySqlContainer(image, username=DB_USER, password=password, dbname=DB_NAME,
                           root_password=root_password, docker_client_kw=client_kw)
        c.ports.clear()  # published on loopback only, on a port chosen here (docker's (ip, port) form)
        ports: dict[str, Any] = c.ports
        ports["3306/tcp"] = ("127.0.0.1", port)
        c.with_name(name)
        c.with_kwargs(labels=labels, network=network)
        try:
            c.start()
        except Exception as exc:
            logs = ""
            with contextlib.suppress(Exception):
                logs = c.get_wrapped_container().logs(tail=15).decode(errors="replace")
            raise ServiceError(f"MySQL container ({image}) did not start: {str(exc).splitlines()[0]}; last lines:\n"
                               + "\n".join("    " + x for x in logs.splitlines())) from None
    version = select_1(port, password, timeout)
    # socket "": admin_connect() reaches root over the published port
    return c, MySQLInfo("127.0.0.1", port, DB_NAME, DB_USER, password, "", version, root_password=root_password)


def network_ip(container: Any, network: str) -> str:
    """The container's address on the session network (where the servers' containers reach it)."""
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    return str(wrapped.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


def select_1(port: int, password: str, timeout: float) -> str:
    """Readiness by a real query: SELECT 1 as the app's user over the published port; the server's version."""
    import pymysql

    def query() -> tuple[str]:
        conn = pymysql.connect(host="127.0.0.1", port=port, user=DB_USER, password=password, database=DB_NAME,
                               connect_timeout=2)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.execute("SELECT VERSION()")
                row = cur.fetchone()
                return (str(row[0]) if row else "",)
        finally:
            conn.close()

    return wait_until(query, timeout, f"answering SELECT 1 on 127.0.0.1:{port}", name="MySQL container",
                      interval=0.2)[0]
