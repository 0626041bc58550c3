"""A cell can pin the uWSGI release it runs (``server_version = "2.0.24"``): a bug or a default that changed
between releases is part of a deployment's behaviour (2.0.25 stopped cancelling in-flight threads on a worker
recycle; max-requests-delta exists only from 2.0.29). uWSGI is a C program that embeds this Python, so a pinned
release is built once from PyPI's source with this interpreter's pip into a cache directory and reused:

    ~/.cache/pytest-wsgi502/uwsgi-2.0.24-cp311-x86_64/bin/uwsgi

(``$WSGI502_CACHE`` or ``$XDG_CACHE_HOME`` move it). Build it ahead, e.g. in an image or a CI step, with
``python -m pytest_wsgi502.servers.versions uwsgi 2.0.24`` (``--builtin``: every release the built-in matrices
pin); otherwise the session builds it before the first
cell (~20 s here), under a lock so xdist workers build it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pytest_wsgi502.config.matrix import SERVER_VERSION
from pytest_wsgi502.services.process import cache_dir
from pytest_wsgi502.services.programs import program_version

BUILDABLE = ("uwsgi",)  # gunicorn is a Python package of this environment: pin it with pip instead


class BuildError(RuntimeError):
    """A pinned server could not be built; the message is one line saying what to do."""


def pinned_dir(server: str, version: str) -> Path:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}"
    return cache_dir() / f"{server}-{version}-{tag}"


def pinned_binary(server: str, version: str) -> Path:
    return pinned_dir(server, version) / "bin" / server


def ensure(server: str, version: str, default_binary: str | None, say: Callable[[str], None] | None = None) -> str:
    """The binary of ``server`` at ``version``: the default one if it is that release, else the cached
    build, built now if missing. Raises ``BuildError``."""
    if server not in BUILDABLE:
        raise BuildError(f"server_version is for {', '.join(BUILDABLE)} cells; pin {server} with pip instead")
    if not SERVER_VERSION.fullmatch(version):
        raise BuildError(f"server_version {version!r} is not a release number like 2.0.24")
    if default_binary and program_version(default_binary) == version:
        return default_binary
    binary = pinned_binary(server, version)
    if binary.exists():
        return str(binary)
    target = pinned_dir(server, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be building the same release
        if binary.exists():
            return str(binary)
        if say is not None:
            say(f"pytest-wsgi502: building {server} {version} for Python {platform.python_version()} into "
                f"{target} (once; ~20 s)")
        _build(server, version, target)
    return str(binary)


def _build(server: str, version: str, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
               "--no-input", "--target", str(tmp), f"{server}=={version}"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise BuildError(f"building {server} {version} took over 15 min; build it ahead: "
                             f"python -m pytest_wsgi502.servers.versions {server} {version}") from None
        built = tmp / "bin" / server
        if out.returncode != 0 or not built.exists():
            lines = [ln.strip() for ln in (out.stderr + out.stdout).splitlines() if ln.strip()]
            why = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "no output")
            raise BuildError(f"could not build {server} {version} with pip ({why[:200]}); it needs a C compiler "
                             "and this Python's headers (bash bin/dev installs them)")
        got = program_version(str(built))
        if got != version:
            raise BuildError(f"pip built {server} {got or '?'} when asked for {version}")
        tmp.rename(target)  # atomic: a half-built directory is never found as a build
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


def pinned_in_builtin_matrices() -> list[tuple[str, str]]:
    """(server, version) pairs the built-in matrices pin (scenarios: lifetime on 2.0.24)."""
    from pytest_wsgi502.config.matrix import BUILTIN, load_matrix

    return sorted({(c.server, c.server_version) for p in BUILTIN.values() for c in load_matrix(p) if c.server_version})


def main(argv: list[str] | None = None) -> int:
    """``uwsgi VERSION``: build (or find) that release and print its binary; ``--builtin``: every release the
    built-in matrices pin (bin/dev test runs this before the tests, so no test waits for a build)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--builtin"]:
        wanted = pinned_in_builtin_matrices()
    elif len(args) == 2:
        wanted = [(args[0], args[1])]
    else:
        print("usage: python -m pytest_wsgi502.servers.versions {uwsgi VERSION | --builtin}", file=sys.stderr)
        return 2
    from pytest_wsgi502.servers.factory import binary_for

    for server, version in wanted:
        try:
            print(ensure(server, version, binary_for(server), say=lambda m: print(m, file=sys.stderr, flush=True)))
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
