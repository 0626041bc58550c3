"""Images by content hash: the app image (the project, uWSGI and gunicorn on a base image, from wheels built on
the host), the app image plus a pinned server release, and a MariaDB image for machines without a registry.
A tag is a hash of everything that goes into the image: a second session finds it and builds nothing."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_wsgi502.services.process import ServiceError, cache_dir, tail

APP_REPO = "localhost/wsgi502-app"
# the app image's layout, and where a server container finds its cell
VENV = "/opt/venv"
APP_DIR = "/app"
CELL_DIR = "/wsgi502/cell"  # the cell's host directory, mounted: configs in, gunicorn's hook events out
APP_PORT, STATS_PORT = 8000, 9191
# what the app image installs (pinned to the versions installed next to this pytest when there are any)
SERVER_DISTS = ("django", "uwsgi", "gunicorn", "gevent", "pymysql", "mysqlclient", "sqlalchemy",
                "django-db-connection-pool[mysql]")
_EXCLUDE_DIRS = {"__pycache__", ".git", ".venv", "venv", ".tox", ".mypy_cache", ".pytest_cache", ".ruff_cache",
                 "node_modules"}


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
        packages=" ".join(packages), venv=VENV, app=APP_DIR, pip_wheel=pip_wheel,
        reqs=" ".join(f"'{r}'" for r in reqs),
    )
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


MARIADB_DIR = Path(__file__).resolve().parents[2] / "images" / "mariadb"


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
