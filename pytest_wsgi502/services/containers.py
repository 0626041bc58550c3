"""The containers backend: MySQL and each cell's server in containers on a Docker-compatible engine.

Imported only when ``--wsgi-backend`` resolves to ``containers`` (it imports docker and testcontainers).

- **Labels, not Ryuk.** Every container and network carries ``org.pytest-wsgi502.session=<id>`` and
  ``org.pytest-wsgi502.owner=<host> <pid> <start time>``. The session removes them on teardown, ``atexit`` and
  ``pytest_unconfigure`` (Ctrl-C); a watchdog process removes them when this process dies without that
  (SIGKILL, a crashed xdist worker); and each new session removes whatever a dead owner on this host left.
- **Images by content hash.** The app image's tag is a hash of its base image id, its Dockerfile, the wheels
  and the project's files: a second session finds the tag and builds nothing. Wheels are built on the host
  (``pip wheel``), cached the same way, so the image build needs no network to PyPI.
- **Loopback only.** Every published port is bound to 127.0.0.1 on a port chosen here, so the proxy and the
  load engine on the host reach the server exactly as in the local backend.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_wsgi502.services.mysql import MySQLInfo, new_password
from pytest_wsgi502.services.process import ServiceError, _start_time, cache_dir, free_port

LABEL = "org.pytest-wsgi502.session"
OWNER_LABEL = "org.pytest-wsgi502.owner"
APP_REPO = "localhost/wsgi502-app"
VENV = "/opt/venv"
APP_DIR = "/app"
CELL_DIR = "/wsgi502/cell"  # the cell's host directory, mounted: configs in, gunicorn's hook events out
APP_PORT, STATS_PORT = 8000, 9191
# what the app image installs (pinned to the versions installed next to this pytest when there are any)
SERVER_DISTS = ("django", "uwsgi", "gunicorn", "gevent", "pymysql", "mysqlclient", "sqlalchemy",
                "django-db-connection-pool[mysql]")
_EXCLUDE_DIRS = {"__pycache__", ".git", ".venv", "venv", ".tox", ".mypy_cache", ".pytest_cache", ".ruff_cache",
                 "node_modules"}
_SESSIONS: list[ContainerSession] = []


# --- labels and cleanup (pure over a docker-like client: tests pass a fake) -------------------------------------

def owner_id(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()} {pid} {_start_time(pid)}"


def owner_alive(owner: str, hostname: str | None = None) -> bool:
    """Whether the process named by an owner label still runs. Another host's owner counts as alive: we
    cannot tell, so we never touch its containers."""
    try:
        host, pid_s, started = owner.rsplit(" ", 2)
        pid = int(pid_s)
    except ValueError:
        return False  # not a label we wrote in this form: treat as an orphan of ours
    if host != (hostname or socket.gethostname()):
        return True
    return _start_time(pid) == started


def session_labels(session_id: str, owner: str) -> dict[str, str]:
    return {LABEL: session_id, OWNER_LABEL: owner}


def remove_session(client: Any, session_id: str) -> list[str]:
    """Remove every container, then every network, labelled with this session. Returns what was removed.

    Low-level list calls (one request, no per-container inspect): a container that disappears meanwhile (the
    watchdog and a teardown racing) is not an error."""
    removed: list[str] = []
    flt = {"label": f"{LABEL}={session_id}"}
    for c in client.api.containers(all=True, filters=flt):
        with contextlib.suppress(Exception):
            client.api.remove_container(c["Id"], force=True, v=True)
            removed.append(f"container {_name(c)}")
    for n in client.api.networks(filters=flt):
        with contextlib.suppress(Exception):
            client.api.remove_network(n["Id"])
            removed.append(f"network {_name(n)}")
    return removed


def reap_leftovers(client: Any, alive: Callable[[str], bool] = owner_alive) -> list[str]:
    """Remove the containers and networks of sessions whose owner process is gone (killed sessions)."""
    sessions: dict[str, str] = {}
    flt = {"label": LABEL}
    for obj in [*client.api.containers(all=True, filters=flt), *client.api.networks(filters=flt)]:
        labels = obj.get("Labels") or {}
        sessions.setdefault(labels.get(LABEL, ""), labels.get(OWNER_LABEL, ""))
    removed: list[str] = []
    for session_id, owner in sessions.items():
        if session_id and not alive(owner):
            removed += remove_session(client, session_id)
    return removed


def session_objects(client: Any, session_id: str) -> list[str]:
    """What the engine still has of a session (containers with their state, networks): `podman ps -a` by label."""
    flt = {"label": f"{LABEL}={session_id}"}
    return ([f"container {_name(c)} ({c.get('State')})" for c in client.api.containers(all=True, filters=flt)]
            + [f"network {_name(n)}" for n in client.api.networks(filters=flt)])


def _name(obj: Mapping[str, Any]) -> str:
    names = obj.get("Names") or [obj.get("Name") or obj.get("Id", "?")[:12]]
    return str(names[0]).lstrip("/")


# --- content hashes ---------------------------------------------------------------------------------------------

def project_files(root: Path) -> list[Path]:
    """The project's files that go into the image (sorted; caches, VCS and virtualenvs left out)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDE_DIRS and not d.endswith(".egg-info"))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith((".pyc", ".pyo"))]
    return out


def content_hash(parts: Iterable[str | bytes], files: Iterable[tuple[str, Path]] = ()) -> str:
    """sha256 over strings and (name, file) pairs, in order: equal inputs, equal hash (the image tag)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big") + data)
    for name, path in files:
        h.update(b"\0file\0" + name.encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def requirements(project: Path) -> list[str]:
    """What the app image installs: the servers and drivers pinned to this environment's versions, plus the
    project's requirements.txt when it has one."""
    reqs = []
    for spec in SERVER_DISTS:
        dist = spec.split("[")[0]
        try:
            reqs.append(f"{spec}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            reqs.append(spec)
    extra = project / "requirements.txt"
    if extra.is_file():
        reqs += [line.strip() for line in extra.read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith(("#", "-"))]
    return reqs


def build_wheels(reqs: list[str], log: Path, cache: Path | None = None) -> Path:
    """``pip wheel`` on the host into a directory keyed by the requirements and this Python; reused after."""
    key = content_hash([sys.version, sys.platform, *sorted(reqs)])
    out = (cache or cache_dir()) / "wheels" / key
    if (out / ".complete").exists():
        return out
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(tmp), "pip", *reqs]
    with open(log, "ab") as fh:
        rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=1800).returncode
    if rc != 0:
        from pytest_wsgi502.services.process import tail

        raise ServiceError(f"pip wheel for the app image failed (exit {rc}); last lines of {log}:\n{tail(log)}")
    (tmp / ".complete").write_text("\n".join(reqs) + "\n")
    if out.exists():  # another worker finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def runtime_packages(dists: Iterable[str]) -> list[str]:
    """Debian packages of the shared libraries that this environment's compiled (non-manylinux) builds of
    ``dists`` link against, found with ldd and dpkg -S; the image installs those its base lacks. Libraries
    of the Python itself are the base image's job. Empty where there is no dpkg."""
    if not shutil.which("dpkg") or not shutil.which("ldd"):
        return []
    libs: set[str] = set()
    for dist in dists:
        try:
            files = metadata.files(dist.split("[")[0]) or []
        except metadata.PackageNotFoundError:
            continue
        for f in files:
            p = Path(str(f.locate()))
            if not (p.suffix == ".so" or ".so." in p.name or (p.parent.name == "bin" and p.name == dist)):
                continue
            if ".libs" in p.parts or not p.is_file():  # manylinux wheels bring their own libraries
                continue
            out = subprocess.run(["ldd", str(p)], capture_output=True, text=True, timeout=30).stdout
            for line in out.splitlines():
                _, _, rest = line.partition("=> ")
                lib = rest.split(" (")[0].strip()
                if lib.startswith("/") and "libpython" not in lib and not lib.startswith(sys.base_prefix):
                    libs.add(lib)
    if not libs:
        return []
    res = subprocess.run(["dpkg", "-S", *sorted(libs)], capture_output=True, text=True, timeout=30)
    pkgs = {line.split(":")[0] for line in res.stdout.splitlines() if ":" in line}
    return sorted(p for p in pkgs if not p.startswith(("libc6", "libgcc", "libstdc++")))


APP_DOCKERFILE = """\
# rendered by pytest-wsgi502: the app under test with uWSGI and gunicorn (wheels built on the host)
FROM {base}
RUN python3 -c "import sys; v = sys.version_info[:2]; sys.exit(0 if v == {pyver} else \\
    'base image python3 is %d.%d, pytest runs {pyver_dot} (the wheels are built here): pick another base' % v)"
RUN missing=""; for p in {packages}; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done; \\
    if [ -n "$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive \\
    apt-get install -y -q --no-install-recommends $missing && rm -rf /var/lib/apt/lists/*; fi
COPY wheels /wheels
RUN python3 -m venv --without-pip {venv} && \\
    {venv}/bin/python /wheels/{pip_wheel}/pip install -q --no-index --no-cache-dir --find-links /wheels \\
    {reqs} && rm -rf /wheels
COPY app {app}
WORKDIR {app}
ENV PATH={venv}/bin:$PATH PYTHONUNBUFFERED=1
RUN {venv}/bin/uwsgi --version && {venv}/bin/gunicorn --version && {venv}/bin/python -c "import MySQLdb, django"
"""


def build_image(client: Any, tag: str, dockerfile: str, files: Mapping[str, Path], log: Path) -> None:
    """Build ``tag`` from a Dockerfile and a context of host files/directories (name in the context -> path)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
        for name, path in files.items():
            if path.is_dir():
                for f in project_files(path) if name == "app" else sorted(path.rglob("*")):
                    if f.is_file():
                        tar.add(str(f), arcname=f"{name}/{f.relative_to(path)}")
            else:
                tar.add(str(path), arcname=name)
    buf.seek(0)
    lines: list[str] = []
    try:
        for chunk in client.api.build(fileobj=buf, custom_context=True, tag=tag, rm=True, forcerm=True,
                                      decode=True):
            text = chunk.get("stream") or chunk.get("error") or ""
            lines.append(text)
            if chunk.get("error"):
                raise ServiceError(chunk["error"])
    except ServiceError as exc:
        log.write_text("".join(lines))
        raise ServiceError(f"building {tag} failed: {str(exc).strip()}; build log {log}:\n"
                           + "\n".join("    " + x for x in "".join(lines).splitlines()[-12:])) from None
    except Exception as exc:
        log.write_text("".join(lines))
        raise ServiceError(f"building {tag} failed: {exc}; build log {log}") from None
    log.write_text("".join(lines))
    try:
        client.images.get(tag)
    except Exception:
        raise ServiceError(f"building {tag} ended without the image; build log {log}") from None


def image_id(client: Any, ref: str) -> str:
    import docker.errors

    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(ref)
        return str(client.images.get(ref).id)
    except Exception as exc:
        raise ServiceError(f"image {ref} is not here and could not be pulled: {str(exc).splitlines()[0]}") from None


def has_image(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def app_image(client: Any, base: str, project: Path, workdir: Path) -> tuple[str, bool]:
    """The app image for ``project`` on ``base``: (tag, built now?). Reused when its content hash exists."""
    base_id = image_id(client, base)
    reqs = requirements(project)
    wheels = build_wheels(reqs, workdir / "pip-wheel.log")
    pip_wheel = next((p.name for p in wheels.glob("pip-*.whl")), None)
    if pip_wheel is None:
        raise ServiceError(f"no pip wheel in {wheels}: remove that directory and run again")
    packages = runtime_packages(SERVER_DISTS)
    dockerfile = APP_DOCKERFILE.format(
        base=base, pyver=tuple(sys.version_info[:2]), pyver_dot="{}.{}".format(*sys.version_info[:2]),
        packages=" ".join(packages) or "none-needed", venv=VENV, app=APP_DIR, pip_wheel=pip_wheel,
        reqs=" ".join(f"'{r}'" for r in reqs),
    ).replace("for p in none-needed;", "for p in ;")
    wheel_files = sorted(p for p in wheels.iterdir() if p.suffix == ".whl")
    tag = f"{APP_REPO}:" + content_hash(
        [base_id, dockerfile], [(f"wheels/{p.name}", p) for p in wheel_files]
        + [(f"app/{p.relative_to(project)}", p) for p in project_files(project)])
    if has_image(client, tag):
        return tag, False
    build_image(client, tag, dockerfile, {"wheels": wheels, "app": project}, workdir / "app-image-build.log")
    return tag, True


PINNED_DIR = "/opt/wsgi502-pinned"  # pinned server releases (servers/versions.py) inside the app image
PINNED_DOCKERFILE = """\
# rendered by pytest-wsgi502: the app image plus a pinned {server} release built on the host for the same Python
FROM {app}
COPY pinned {dest}
RUN {dest}/bin/{server} --version
"""


def pinned_binary_in_image(server: str, version: str) -> str:
    return f"{PINNED_DIR}/{server}-{version}/bin/{server}"


def pinned_image(client: Any, app: str, server: str, version: str, host_dir: Path, log: Path) -> tuple[str, bool]:
    """The app image plus the host's build of ``server`` ``version`` (a directory from servers/versions.py,
    built with this Python, which the app image's base matches): (tag, built now?)."""
    dest = pinned_binary_in_image(server, version).rsplit("/bin/", 1)[0]
    dockerfile = PINNED_DOCKERFILE.format(app=app, dest=dest, server=server)
    files = [p for p in sorted(host_dir.rglob("*")) if p.is_file()]
    tag = f"{APP_REPO}:" + content_hash([app, dockerfile], [(f"pinned/{p.relative_to(host_dir)}", p) for p in files])
    if has_image(client, tag):
        return tag, False
    build_image(client, tag, dockerfile, {"pinned": host_dir}, log)
    return tag, True


MARIADB_DIR = Path(__file__).resolve().parent.parent / "images" / "mariadb"


def mariadb_image(client: Any, base: str, log: Path) -> tuple[str, bool]:
    """A MariaDB image that testcontainers' MySqlContainer accepts, built FROM ``base`` (a Debian image):
    for machines without a registry. (tag, built now?)"""
    dockerfile = (MARIADB_DIR / "Dockerfile").read_text().replace("${BASE}", base)
    entry = MARIADB_DIR / "entrypoint.sh"
    tag = "localhost/wsgi502-mariadb:" + content_hash([image_id(client, base), dockerfile], [("entrypoint", entry)])
    if has_image(client, tag):
        return tag, False
    build_image(client, tag, dockerfile, {"entrypoint.sh": entry}, log)
    return tag, True


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


# --- the session: engine client, network, MySQL, images; always cleaned up ----------------------------------------

class ContainerSession:
    """One pytest process's containers: created lazily, removed by ``close`` (idempotent)."""

    def __init__(self, docker_host: str, run_dir: Path, settings: Any, project: Path) -> None:
        self.docker_host, self.run_dir, self.settings, self.project = docker_host, run_dir, settings, project
        self.id = uuid.uuid4().hex[:12]
        self.labels = session_labels(self.id, owner_id())
        self.timings: dict[str, float] = {}
        self.images: dict[str, str] = {}
        self.client: Any = None
        self.network: Any = None
        self.mysql: Any = None
        self.mysql_ip = ""
        self.reaped: list[str] = []
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._lock = threading.Lock()

    def _timed(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.monotonic() - t0, 2)

    def open(self) -> ContainerSession:
        import docker

        t0 = time.monotonic()
        try:
            self.client = docker.DockerClient(base_url=self.docker_host, timeout=300)
            self.engine = self._engine_info()
        except Exception as exc:
            raise ServiceError(f"container engine at {self.docker_host}: {str(exc).splitlines()[0]}") from None
        _SESSIONS.append(self)
        (self.run_dir / "container-session").write_text(self.id + "\n")  # for tests and humans: the label value
        self.reaped = reap_leftovers(self.client)
        self._start_watchdog()
        self.network = self.client.networks.create(f"wsgi502-{self.id}", labels=self.labels)
        self._timed("engine", t0)
        return self

    def _engine_info(self) -> dict[str, Any]:
        v = self.client.version()
        comps = {c.get("Name"): c.get("Version") for c in v.get("Components", [])}
        name = "podman" if any("podman" in str(k).lower() for k in comps) else "docker"
        return {"name": name, "version": comps.get("Podman Engine") or v.get("Version"),
                "api_version": v.get("ApiVersion"), "host": self.docker_host}

    def _start_watchdog(self) -> None:
        """A child that removes this session's containers when this process dies without doing it (SIGKILL,
        a crashed xdist worker): it waits for EOF on a pipe only this process holds."""
        with open(self.run_dir / "watchdog.log", "ab") as err:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "pytest_wsgi502.services.containers", "watchdog", self.docker_host, self.id],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True,  # Ctrl-C in the terminal must not kill it before it cleans up
            )

    def new_labels(self, role: str) -> dict[str, str]:
        return {**self.labels, "org.pytest-wsgi502.role": role}

    def start_mysql(self, timeout: float = 180.0) -> Any:
        from testcontainers.community.mysql import MySqlContainer

        from pytest_wsgi502.services.mysql import DB_NAME, DB_USER

        image = self.settings.mysql_image
        t0 = time.monotonic()
        image_id(self.client, image)  # pulls it (or says clearly that it cannot)
        port = free_port()
        # per-session passwords, like the local backend; the container's port is published on 127.0.0.1 only
        password, root_password = new_password(), new_password()
        with testcontainers_settings(self.docker_host) as client_kw:
            c = MySqlContainer(image, username=DB_USER, password=password, dbname=DB_NAME,
                               root_password=root_password, docker_client_kw=client_kw)
            self._start_mysql_container(c, image, port)
        version = self._select_1(port, password, timeout)
        wrapped = c.get_wrapped_container()
        wrapped.reload()
        self.mysql_ip = wrapped.attrs["NetworkSettings"]["Networks"][self.network.name]["IPAddress"]
        self._timed("mysql_ready", t0)
        self.images["mysql"] = image
        # socket "": admin_connect() reaches root over the published port
        return MySQLInfo("127.0.0.1", port, DB_NAME, DB_USER, password, "", version, root_password=root_password)

    def _start_mysql_container(self, c: Any, image: str, port: int) -> None:
        c.ports.clear()  # published on loopback only, on a port chosen here (docker's (ip, port) form)
        ports: dict[str, Any] = c.ports
        ports["3306/tcp"] = ("127.0.0.1", port)
        c.with_name(f"wsgi502-{self.id}-mysql")
        c.with_kwargs(labels=self.new_labels("mysql"), network=self.network.name)
        self.mysql = c
        try:
            c.start()
        except Exception as exc:
            logs = ""
            with contextlib.suppress(Exception):
                logs = c.get_wrapped_container().logs(tail=15).decode(errors="replace")
            raise ServiceError(f"MySQL container ({image}) did not start: {str(exc).splitlines()[0]}; last lines:\n"
                               + "\n".join("    " + x for x in logs.splitlines())) from None

    def _select_1(self, port: int, password: str, timeout: float) -> str:
        """Readiness by a real query: SELECT 1 as the app's user over the published port."""
        import pymysql

        from pytest_wsgi502.services.mysql import DB_NAME, DB_USER

        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            try:
                conn = pymysql.connect(host="127.0.0.1", port=port, user=DB_USER, password=password,
                                       database=DB_NAME, connect_timeout=2)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.execute("SELECT VERSION()")
                        row = cur.fetchone()
                        return str(row[0]) if row else ""
                finally:
                    conn.close()
            except Exception as exc:
                last = str(exc)
                time.sleep(0.2)
        raise ServiceError(f"MySQL container not answering SELECT 1 on 127.0.0.1:{port} after {timeout:.0f}s: {last}")

    def app_image(self) -> str:
        with self._lock:
            if "app" not in self.images:
                t0 = time.monotonic()
                tag, built = app_image(self.client, self.settings.base_image, self.project, self.run_dir)
                self._timed("app_image_build" if built else "app_image_cached", t0)
                self.images["app"], self.images["base"] = tag, self.settings.base_image
            return self.images["app"]

    def server_image(self, server: str, version: str, host_binary: str) -> str:
        """The image a cell's server runs in: the app image, plus the pinned release when the cell has one."""
        app = self.app_image()
        if not version:
            return app
        key = f"{server}-{version}"
        with self._lock:
            if key not in self.images:
                t0 = time.monotonic()
                tag, built = pinned_image(self.client, app, server, version, Path(host_binary).parent.parent,
                                          self.run_dir / f"{key}-image-build.log")
                self._timed(f"{key}_image_build" if built else f"{key}_image_cached", t0)
                self.images[key] = tag
            return self.images[key]

    def close(self) -> list[str]:
        if self._closed or self.client is None:
            return []
        self._closed = True
        removed = remove_session(self.client, self.id)
        if self._watchdog is not None:
            with contextlib.suppress(Exception):
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()
                self._watchdog.wait(30)
        with contextlib.suppress(Exception):
            self.client.close()
        if self in _SESSIONS:
            _SESSIONS.remove(self)
        return removed


def close_all() -> None:
    for s in list(_SESSIONS):
        with contextlib.suppress(Exception):
            s.close()


atexit.register(close_all)


def watchdog(docker_host: str, session_id: str) -> None:
    """Block until the parent's pipe closes (it exited, however), then remove the session's leftovers."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):
        sys.stdin.buffer.read()
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=60)
    removed = remove_session(client, session_id)
    if removed:
        print(f"wsgi502 watchdog: removed {', '.join(removed)}", file=sys.stderr)


def main(argv: list[str]) -> int:
    if argv[:1] == ["watchdog"] and len(argv) == 3:
        watchdog(argv[1], argv[2])
        return 0
    if argv[:1] == ["mariadb-image"] and len(argv) == 2:
        import docker

        from pytest_wsgi502.services.engine import candidates, ping

        host = next((u for u in candidates(os.environ) if ping(u) is None), None)
        if host is None:
            print("no container engine answers (DOCKER_HOST)", file=sys.stderr)
            return 1
        log = Path(os.environ.get("TMPDIR", "/tmp")) / "wsgi502-mariadb-build.log"
        tag, built = mariadb_image(docker.DockerClient(base_url=host, timeout=600), argv[1], log)
        print(json.dumps({"tag": tag, "built": built}))
        return 0
    print("usage: python -m pytest_wsgi502.services.containers {watchdog HOST SESSION | mariadb-image BASE}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
