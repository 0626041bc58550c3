"""A private MariaDB/MySQL server per test session: own datadir and socket, a free port on 127.0.0.1.

Nothing is open: root and the app's user get random passwords per session (never logged, never on a command
line: MariaDB's are set in a bootstrap run fed on stdin, before the server listens); the app's user may use
only its database (and Django's ``test_`` one) from 127.0.0.1; ``secure_file_priv`` is a private directory.
When pytest runs as root the server runs as Debian's ``mysql`` account, with its datadir, socket and files
in a ``<tempdir>/wsgi502-mysql-XXXX`` directory (0700, owned by ``mysql``) that no other user can enter.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_wsgi502.services.process import (
    CpuPlace,
    LocalProcess,
    ServiceError,
    find_binary,
    free_port,
    private_tmpdir,
    service_account,
    setpriv,
    tail,
)

DB_NAME, DB_USER = "wsgi502", "wsgi502"
SERVICE_USER = "mysql"  # the account a root session runs the server as (Debian's mariadb-server creates it)
APP_HOST = "127.0.0.1"  # where the app's login may come from (the server listens there only)


def new_password() -> str:
    """A per-session password: URL-safe characters only, so it needs no quoting inside SQL '...'."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class MySQLInfo:
    host: str
    port: int
    name: str
    user: str
    password: str = field(repr=False)
    socket: str  # root's way in on the local backend ("" when only TCP reaches the server: containers)
    version: str
    root_password: str = field(default="", repr=False)

    def env(self) -> dict[str, str]:
        """The WSGI502_DB_* variables the app under test reads (see sample_project/sampleapp/settings.py): its
        own login only, over TCP. Root's password and socket stay with the harness."""
        return {
            "WSGI502_DB_HOST": self.host, "WSGI502_DB_PORT": str(self.port), "WSGI502_DB_NAME": self.name,
            "WSGI502_DB_USER": self.user, "WSGI502_DB_PASSWORD": self.password,
        }

    def admin_connect(self, timeout: float = 5) -> Any:
        """A pymysql connection as root with the session's password: over the private unix socket when there is
        one, else TCP to host:port (the containers backend)."""
        import pymysql

        if self.socket:
            return pymysql.connect(unix_socket=self.socket, user="root", password=self.root_password,
                                   connect_timeout=timeout)
        return pymysql.connect(host=self.host, port=self.port, user="root", password=self.root_password,
                               connect_timeout=timeout)

    def set_max_connections(self, value: int) -> int:
        """Set the server's global max_connections (this session's private server); return the previous value."""
        conn = self.admin_connect(timeout=5)  # root with the session's random password, never logged
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@GLOBAL.max_connections")
                row = cur.fetchone()
                cur.execute("SET GLOBAL max_connections = %s", (int(value),))
            return int(row[0]) if row else 151
        finally:
            conn.close()


def find_mysqld(explicit: str | None) -> str | None:
    return find_binary(("mariadbd", "mysqld"), explicit)


def bootstrap_sql(root_password: str, app_password: str) -> str:
    """What MariaDB's bootstrap run executes (on stdin, before the server listens): only root@localhost stays
    (mariadb-install-db also makes a unix_socket login for the OS user that ran it), and it needs the
    password; the app's login may reach its databases from 127.0.0.1 only."""
    for pw in (root_password, app_password):
        if not pw or not all(c.isalnum() or c in "-_" for c in pw):
            raise ValueError("passwords must be non-empty and URL-safe (new_password())")
    return "\n".join([
        # bootstrap runs without grant tables: edit them, then load them so ALTER/CREATE USER work
        "DELETE FROM mysql.global_priv WHERE NOT (User = 'root' AND Host = 'localhost') AND User <> 'mariadb.sys';",
        "DELETE FROM mysql.proxies_priv WHERE NOT (User = 'root' AND Host = 'localhost');",
        "FLUSH PRIVILEGES;",
        f"ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('{root_password}');",
        *app_sql(app_password, APP_HOST),
        "",
    ])


def app_sql(password: str, host: str) -> list[str]:
    """The app's database and login: rights on its database and Django's test_ one only. No FILE, SUPER or
    CONNECTION ADMIN (the last would let the app ignore max_connections, which db-exhaustion cells lower)."""
    return [
        f"CREATE DATABASE IF NOT EXISTS `{DB_NAME}` CHARACTER SET utf8mb4;",
        f"CREATE USER '{DB_USER}'@'{host}' IDENTIFIED BY '{password}';",
        f"GRANT ALL ON `{DB_NAME}`.* TO '{DB_USER}'@'{host}';",
        f"GRANT ALL ON `test_{DB_NAME}`.* TO '{DB_USER}'@'{host}';",
    ]


class LocalMySQL:
    def __init__(self, binary: str, workdir: Path, ledger: Path | None = None, place: CpuPlace | None = None) -> None:
        self.binary, self.dir, self.ledger = binary, workdir, ledger
        self.place = place  # inside, with the servers under test (services/isolation.py), when isolated
        self.port = free_port()
        self.private: Path | None = None  # <tempdir>/wsgi502-mysql-XXXX: datadir, socket, pid file, secure_file_priv
        self.socket = ""
        self.process: LocalProcess | None = None
        self.version = ""
        self.as_user = SERVICE_USER if os.geteuid() == 0 else None
        self.tmpdir: Path | None = None  # <private>/tmp, made with the private dirs
        self._root_password, self._password = new_password(), new_password()

    def _private_dirs(self) -> tuple[Path, Path]:
        self.private = private_tmpdir(self.ledger, owner=self.as_user, prefix="mysql")
        self.socket = str(self.private / "mysql.sock")
        files = self.private / "files"  # secure_file_priv: LOAD DATA / INTO OUTFILE only here (and FILE is not
        files.mkdir(mode=0o700)  # granted to the app anyway)
        # its own tmpdir: two sessions bootstrapping at once in the shared /tmp lost each other's temporary
        # tables ("Could not remove temporary table: '/tmp/#sql-temptable-...'", then "Unknown table
        # 'mysql.tmp_user_sys'": 2 of 12 concurrent installs failed here), and nothing of the server belongs there
        tmp = self.private / "tmp"
        tmp.mkdir(mode=0o700)
        if self.as_user is not None:
            uid, gid = service_account(self.as_user)
            os.chown(files, uid, gid)
            os.chown(tmp, uid, gid)
        self.tmpdir = tmp
        return self.private / "data", files

    def _run_init(self, argv: list[str], what: str, stdin: str | None = None) -> None:
        log = self.dir / "mysql-init.log"
        with open(log, "ab") as fh:
            rc = subprocess.run(argv, input=stdin.encode() if stdin is not None else None,
                                stdin=None if stdin is not None else subprocess.DEVNULL,
                                stdout=fh, stderr=subprocess.STDOUT, timeout=120).returncode
        if rc != 0:
            errors = [line for line in log.read_text(errors="replace").splitlines() if "ERROR" in line][-3:]
            first = f" ({'; '.join(e.strip() for e in errors)})" if errors else ""
            raise ServiceError(f"{what} failed (exit {rc}){first}; last lines of {log}:\n{tail(log)}")

    def _initialize(self, datadir: Path) -> bool:
        """A new datadir with the accounts set; False when they still have to be set once the server runs
        (MySQL: only over the private socket, which nobody else can reach)."""
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=30)
        self.version = out.stdout.strip()
        user = [f"--user={self.as_user}"] if self.as_user else []
        if "MariaDB" in self.version:
            installer = find_binary(("mariadb-install-db", "mysql_install_db"))
            if installer is None:
                raise ServiceError("mariadb-install-db not found: install the mariadb-server package")
            self._run_init([installer, "--no-defaults", f"--datadir={datadir}", "--skip-test-db", *user,
                            f"--tmpdir={self.tmpdir}"],
                           "initializing the MariaDB datadir")
            self._run_init([self.binary, "--no-defaults", "--bootstrap", f"--datadir={datadir}", "--skip-networking",
                            "--log-warnings=0", f"--tmpdir={self.tmpdir}", *user],
                           "setting MariaDB's accounts", stdin=bootstrap_sql(self._root_password, self._password))
            return True
        self._run_init([self.binary, "--no-defaults", "--initialize-insecure", f"--datadir={datadir}",
                        f"--tmpdir={self.tmpdir}", *user],
                       "initializing the MySQL datadir")
        return False

    def start(self, timeout: float = 60.0) -> MySQLInfo:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # the private directory too
            raise

    def _start(self, timeout: float) -> MySQLInfo:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.as_user is not None:
            service_account(self.as_user)  # a clear error before anything is made
        datadir, files = self._private_dirs()
        assert self.private is not None
        accounts_set = self._initialize(datadir)
        argv = [
            self.binary, "--no-defaults", f"--datadir={datadir}", f"--socket={self.socket}", f"--port={self.port}",
            "--bind-address=127.0.0.1", "--skip-name-resolve", f"--pid-file={self.private / 'mysql.pid'}",
            f"--secure-file-priv={files}", f"--tmpdir={self.tmpdir}",
            "--innodb-buffer-pool-size=128M", "--innodb-flush-log-at-trx-commit=2",  # a test box, not a bank
            # names the run dir on the command line, as every other service does (leak checks, ps); MariaDB
            # logs one "unknown variable" warning for it and carries on
            f"--loose-wsgi502-run-dir={self.dir}",
        ]
        run_as = None
        if self.as_user is not None:
            if setpriv() is not None:
                run_as = self.as_user  # setpriv drops to it before exec, keeping the death signal
            else:
                argv.append(f"--user={self.as_user}")  # mysqld drops it itself (the death signal is lost)
        self.process = LocalProcess("mysqld", argv, self.dir / "mysql.log", ledger=self.ledger, user=run_as,
                                    place=self.place).start()
        if not accounts_set:  # MySQL: root has no password yet, reachable only through the private socket
            self.process.wait_ready(lambda: self._query("", "SELECT 1") is not None, timeout, "answering SELECT 1")
            self._query("", f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{self._root_password}'",
                        *app_sql(self._password, APP_HOST))
        self.process.wait_ready(lambda: self._query(self._root_password, "SELECT 1") is not None, timeout,
                                "answering SELECT 1")
        return MySQLInfo(APP_HOST, self.port, DB_NAME, DB_USER, self._password, self.socket, self.version,
                         root_password=self._root_password)

    def _query(self, root_password: str, *sql: str) -> tuple[object, ...] | None:
        import pymysql

        conn = pymysql.connect(unix_socket=self.socket, user="root", password=root_password, connect_timeout=2)
        try:
            with conn.cursor() as cur:
                for stmt in sql:
                    cur.execute(stmt.rstrip(";"))
                row: tuple[object, ...] | None = cur.fetchone()
                return row
        finally:
            conn.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=20)
        if self.private is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.private)
            self.private = None

