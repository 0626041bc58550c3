"""The session's MariaDB is not open (issue 12, item 1): random passwords for root and the app, root needs its
password over the socket and TCP, the server runs unprivileged with a datadir nobody else can read, and
``SELECT ... INTO OUTFILE`` is refused. Starts a real MariaDB (run under the heavy lock)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_wsgi502.services.mysql import LocalMySQL, MySQLInfo, find_mysqld

pytestmark = pytest.mark.integration
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="checks what a root session does (runs as root)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMySQL, MySQLInfo]]:
    binary = find_mysqld(None)
    if binary is None:
        pytest.skip("mariadbd not installed")
    work = tmp_path_factory.mktemp("mysql-sec")
    srv = LocalMySQL(binary, work / "mysql", ledger=work / "pids")
    info = srv.start()
    try:
        yield srv, info
    finally:
        srv.stop()


def _connect(**kw: object) -> object:
    import pymysql

    return pymysql.connect(connect_timeout=3, **kw)


def _refused(**kw: object) -> str:
    import pymysql

    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect(**kw).close()  # type: ignore[attr-defined]
    return str(info.value)


def test_passwords_are_random_and_only_the_apps_reach_its_environment(server: Any) -> None:
    _srv, info = server
    assert len(info.password) >= 24 and len(info.root_password) >= 24 and info.password != info.root_password
    assert info.password != "wsgi502"
    env = info.env()
    assert env["WSGI502_DB_PASSWORD"] == info.password
    assert info.root_password not in env.values() and "WSGI502_DB_SOCKET" not in env
    assert info.password not in repr(info) and info.root_password not in repr(info)


def test_root_without_the_session_password_is_refused(server: Any) -> None:
    _srv, info = server
    assert "Access denied" in _refused(unix_socket=info.socket, user="root")
    assert "Access denied" in _refused(host="127.0.0.1", port=info.port, user="root")
    assert "Access denied" in _refused(unix_socket=info.socket, user="root", password="wsgi502")
    assert "Access denied" in _refused(host="127.0.0.1", port=info.port, user="wsgi502", password="wsgi502")
    conn = info.admin_connect(timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone()[0] == "root@localhost"
            cur.execute("SELECT CONCAT(User, '@', Host) FROM mysql.global_priv ORDER BY 1")
            accounts = [r[0] for r in cur.fetchall()]
    finally:
        conn.close()
    # no passwordless root@127.0.0.1 / ::1, no unix_socket login for the account that ran mariadb-install-db
    assert accounts == ["mariadb.sys@localhost", "root@localhost", "wsgi502@127.0.0.1"]


def test_the_app_user_has_its_database_only_and_cannot_write_files(server: Any) -> None:
    import pymysql

    _srv, info = server
    conn = _connect(host=info.host, port=info.port, user=info.user, password=info.password, database=info.name)
    try:
        with conn.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute("CREATE TABLE t (x INT)")
            with pytest.raises(pymysql.err.OperationalError) as err:
                cur.execute("SELECT 1 INTO OUTFILE '/tmp/wsgi502-outfile-probe'")
            assert "FILE privilege" in str(err.value) or "secure-file-priv" in str(err.value)
            with pytest.raises(pymysql.err.OperationalError):
                cur.execute("SET GLOBAL max_connections = 5")
    finally:
        conn.close()  # type: ignore[attr-defined]
    assert not os.path.exists("/tmp/wsgi502-outfile-probe")
    admin = info.admin_connect()
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.secure_file_priv")
            priv = cur.fetchone()[0]
    finally:
        admin.close()
    assert priv and priv.startswith(os.path.dirname(info.socket))


def test_passwords_are_not_in_logs_or_command_lines(server: Any) -> None:
    srv, info = server
    texts = [p.read_bytes() for p in srv.dir.rglob("*") if p.is_file()]
    assert srv.process is not None and srv.process.pid is not None
    texts.append(Path(f"/proc/{srv.process.pid}/cmdline").read_bytes())
    for text in texts:
        assert info.password.encode() not in text and info.root_password.encode() not in text


@ROOT_ONLY
def test_server_runs_as_mysql_in_a_private_dir(server: Any) -> None:
    srv, info = server
    assert srv.process is not None
    user = subprocess.run(["ps", "-o", "user=", "-p", str(srv.process.pid)], capture_output=True, text=True)
    assert user.stdout.strip() == "mysql"
    private = Path(info.socket).parent
    st = private.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (pwd.getpwnam("mysql").pw_uid, 0o700)
    assert len(info.socket.encode()) < 100


def _as_nobody(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not installed")
    return subprocess.run([setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin", **(env or {})},
                          cwd="/")


@ROOT_ONLY
def test_a_local_user_cannot_log_in_without_the_passwords_nor_read_the_datadir(server: Any) -> None:
    _srv, info = server
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        pytest.skip("no mariadb client")
    tcp = ["-h127.0.0.1", f"-P{info.port}", "--skip-ssl", "-e", "SELECT CURRENT_USER()"]
    # the control: the same user with the app's password gets in, so the refusals below are about credentials
    ok = _as_nobody(client, "-uwsgi502", *tcp, env={"MYSQL_PWD": info.password})
    assert ok.returncode == 0 and "wsgi502@" in ok.stdout, ok.stderr
    for user in ("root", "wsgi502"):
        res = _as_nobody(client, f"-u{user}", *tcp)
        assert res.returncode != 0 and "Access denied" in res.stderr, (user, res.stdout, res.stderr)
    sock = _as_nobody(client, f"--socket={info.socket}", "-uroot", "-e", "SELECT 1")
    assert sock.returncode != 0 and ("Can't connect" in sock.stderr or "denied" in sock.stderr.lower())
    datadir = Path(info.socket).parent / "data"
    assert (datadir / "mysql").is_dir()  # it is there: root sees it
    for probe in (["ls", str(datadir)], ["cat", str(datadir / "mysql" / "global_priv.MAD")]):
        res = _as_nobody(*probe)
        assert res.returncode != 0 and "Permission denied" in res.stderr, (probe, res.stderr)
