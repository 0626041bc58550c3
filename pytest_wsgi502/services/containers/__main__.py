"""``python -m pytest_wsgi502.services.containers``: the session's watchdog (started by the session itself), and
``mariadb-image BASE``, which builds (or finds) the MariaDB image for machines without a registry (.ci/run)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv[:1] == ["watchdog"] and len(argv) == 3:
        from pytest_wsgi502.services.containers.reaper import watchdog

        watchdog(argv[1], argv[2])
        return 0
    if argv[:1] == ["mariadb-image"] and len(argv) == 2:
        import docker

        from pytest_wsgi502.services.backend import candidates, ping
        from pytest_wsgi502.services.containers.images import mariadb_image

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
