"""The containers backend: MySQL and each cell's server in containers on a Docker-compatible engine.

Imported only when ``--wsgi-backend`` resolves to ``containers`` (its modules import docker and testcontainers).
One module per job:

- ``reaper``: **labels, not Ryuk.** Every container and network carries ``org.pytest-wsgi502.session=<id>`` and
  ``org.pytest-wsgi502.owner=<host> <pid> <start time>``. The session removes them on teardown, ``atexit`` and
  ``pytest_unconfigure`` (Ctrl-C); a watchdog process removes them when this process dies without that
  (SIGKILL, a crashed xdist worker); and each new session removes whatever a dead owner on this host left.
- ``images``: **images by content hash.** The app image's tag is a hash of its base image id, its Dockerfile,
  the wheels and the project's files: a second session finds the tag and builds nothing. Wheels are built on
  the host (``pip wheel``), cached the same way, so the image build needs no network to PyPI.
- ``db``: the MySQL container (testcontainers' ``MySqlContainer``), ready when ``SELECT 1`` answers.
- ``session``: one pytest process's engine client, network, MySQL and images; always cleaned up. **Loopback
  only:** every published port is bound to 127.0.0.1 on a port chosen here, so the proxy and the load engine
  on the host reach the server exactly as in the local backend.
- ``python -m pytest_wsgi502.services.containers {watchdog HOST SESSION | mariadb-image BASE}`` (``__main__``).

This ``__init__`` imports nothing: ``sys.modules`` holding ``...containers.session`` means the backend was used.
"""
