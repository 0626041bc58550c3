"""A private MariaDB/MySQL server per test session: own datadir and socket, a free port on 127.0.0.1."""

from __future__ import annotations

import getpass
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pytest_wsgi502.services.process import LocalProcess, ServiceError, find_binary, free_port, tail

DB_NAME, DB_USER, DB_PASSWORD = "wsgi502", "wsgi502", "wsgi502"


@dataclass(frozen=True)
class MySQLInfo:
    host: str
    port: int
    name: str
    user: str
    password: str
    socket: str
    version: str

    def env(self) -> dict[str, str]:
        """The WSGI502_DB_* variables the app under test reads (see sample_project/sampleapp/settings.py)."""
        return {
            "WSGI502_DB_HOST": self.host, "WSGI502_DB_PORT": str(self.port), "WSGI502_DB_NAME": self.name,
            "WSGI502_DB_USER": self.user, "WSGI502_DB_PASSWORD": self.password,
            "WSGI502_DB_SOCKET": self.socket,  # root over this socket administers the server (not for the app)
        }


def find_mysqld(explicit: str | None) -> str | None:
    return find_binary(("mariadbd", "mysqld"), explicit)


class LocalMySQL:
    def __init__(self, binary: str, workdir: Path, ledger: Path | None = None) -> None:
        self.binary, self.dir, self.ledger = binary, workdir, ledger
        self.port = free_port()
        self.socket = str(workdir / "mysql.sock")
        self.process: LocalProcess | None = None
        self.version = ""

    def _initialize(self, datadir: Path) -> None:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=30)
        self.version = out.stdout.strip()
        user = ["--user=" + getpass.getuser()] if os.geteuid() == 0 else []
        if "MariaDB" in self.version:
            installer = find_binary(("mariadb-install-db", "mysql_install_db"))
            if installer is None:
                raise ServiceError("mariadb-install-db not found: install the mariadb-server package")
            argv = [installer, "--no-defaults", f"--datadir={datadir}", "--auth-root-authentication-method=normal",
                    "--skip-test-db", *user]
        else:
            argv = [self.binary, "--no-defaults", "--initialize-insecure", f"--datadir={datadir}", *user]
        log = self.dir / "mysql-init.log"
        with open(log, "wb") as fh:
            rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=120).returncode
        if rc != 0:
            raise ServiceError(f"initializing the MySQL datadir failed (exit {rc}); last lines of {log}:\n{tail(log)}")

    def start(self, timeout: float = 60.0) -> MySQLInfo:
        datadir = self.dir / "mysql-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._initialize(datadir)
        user = ["--user=" + getpass.getuser()] if os.geteuid() == 0 else []
        argv = [
            self.binary, "--no-defaults", f"--datadir={datadir}", f"--socket={self.socket}", f"--port={self.port}",
            "--bind-address=127.0.0.1", "--skip-name-resolve", f"--pid-file={self.dir / 'mysql.pid'}",
            "--innodb-buffer-pool-size=128M", "--innodb-flush-log-at-trx-commit=2",  # a test box, not a bank
            *user,
        ]
        self.process = LocalProcess("mysqld", argv, self.dir / "mysql.log", ledger=self.ledger).start()
        self.process.wait_ready(lambda: self._query("SELECT 1") is not None, timeout, "answering SELECT 1")
        self._query(
            f"CREATE DATABASE IF NOT EXISTS {DB_NAME} CHARACTER SET utf8mb4",
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'%' IDENTIFIED BY '{DB_PASSWORD}'",
            # the app's database (and Django's test_ one) only: no SUPER / CONNECTION ADMIN, which would let the
            # app ignore max_connections (the db-exhaustion scenario lowers it)
            f"GRANT ALL ON `{DB_NAME}`.* TO '{DB_USER}'@'%'",
            f"GRANT ALL ON `test_{DB_NAME}`.* TO '{DB_USER}'@'%'",
        )
        return MySQLInfo("127.0.0.1", self.port, DB_NAME, DB_USER, DB_PASSWORD, self.socket, self.version)

    def _query(self, *sql: str) -> tuple[object, ...] | None:
        import pymysql

        conn = pymysql.connect(unix_socket=self.socket, user="root", connect_timeout=2)
        try:
            with conn.cursor() as cur:
                for stmt in sql:
                    cur.execute(stmt)
                return cur.fetchone()
        finally:
            conn.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=20)
