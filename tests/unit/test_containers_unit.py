"""The containers backend's pure parts: engine choice, labels and cleanup (fake engine client), content hashes,
the container's environment and limits. No engine needed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pytest_wsgi502.config.matrix import expand
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.servers.in_container import container_env, mem_bytes
from pytest_wsgi502.services.backend import candidates, choose
from pytest_wsgi502.services.containers import db, images, reaper, session
from pytest_wsgi502.services.process import ServiceError


def test_local_is_chosen_without_probing() -> None:
    def probe(url: Any) -> None:
        raise AssertionError("local must not touch an engine")

    assert choose("local", {}, probe=probe).name == "local"


def test_auto_uses_docker_host_when_it_answers() -> None:
    c = choose("auto", {"DOCKER_HOST": "unix:///run/x.sock"}, probe=lambda url: None, exists=lambda p: False)
    assert (c.name, c.docker_host) == ("containers", "unix:///run/x.sock")
    assert c.reason == "auto: engine at unix:///run/x.sock (DOCKER_HOST) answered"


def test_auto_falls_back_to_local_and_says_why() -> None:
    c = choose("auto", {"DOCKER_HOST": "tcp://127.0.0.1:1"}, probe=lambda url: "Connection refused")
    assert c.name == "local" and "tcp://127.0.0.1:1: Connection refused" in c.reason


def test_auto_tries_only_default_sockets_that_exist() -> None:
    probed = []
    c = choose("auto", {"HOME": "/h", "XDG_RUNTIME_DIR": "/x"},
               probe=lambda url: probed.append(url), exists=lambda p: p == "/run/podman/podman.sock")
    assert probed == ["unix:///run/podman/podman.sock"]
    assert c.name == "containers" and "(default socket)" in c.reason


def test_forced_containers_without_engine_is_one_line() -> None:
    with pytest.raises(ValueError) as info:
        choose("containers", {"HOME": "/h"}, probe=lambda url: "nope", exists=lambda p: False)
    msg = str(info.value)
    assert msg.startswith("--wsgi-backend=containers: no Docker-compatible engine answers")
    assert "\n" not in msg and "/var/run/docker.sock" in msg


def test_default_socket_candidates_follow_the_environment() -> None:
    assert candidates({"DOCKER_HOST": "unix:///a"}) == ["unix:///a"]
    got = candidates({"XDG_RUNTIME_DIR": "/run/user/7", "HOME": "/home/u"})
    assert "unix:///run/user/7/podman/podman.sock" in got and "unix:///home/u/.docker/run/docker.sock" in got


class FakeAPI:
    """The docker SDK's low-level API, as far as cleanup uses it."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def add(self, kind: Any, name: Any, labels: Any) -> None:
        self.items[name] = {"Id": name, "kind": kind, "Names": ["/" + name], "Name": name, "Labels": labels}

    def _list(self, kind: Any, filters: Any) -> Any:
        key, _, value = filters["label"].partition("=")
        return [dict(o) for o in self.items.values()
                if o["kind"] == kind and key in o["Labels"] and (not value or o["Labels"][key] == value)]

    def containers(self, all: Any=False, filters: Any=None) -> Any:
        return self._list("container", filters)

    def networks(self, filters: Any=None) -> Any:
        return self._list("network", filters)

    def remove_container(self, cid: Any, **kwargs: Any) -> None:
        self.items.pop(cid)

    def remove_network(self, nid: Any) -> None:
        self.items.pop(nid)


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeAPI()


def _client() -> Any:
    c = FakeClient()
    live, dead = reaper.session_labels("live", "h 1 a"), reaper.session_labels("dead", "h 2 b")
    for name, labels in (("live-mysql", live), ("live-app", live), ("dead-mysql", dead), ("dead-app", dead),
                         ("stranger", {"other": "x"})):
        c.api.add("container", name, labels)
    c.api.add("network", "net-live", live)
    c.api.add("network", "net-dead", dead)
    return c


def test_remove_session_removes_only_that_session() -> None:
    c = _client()
    removed = reaper.remove_session(c, "dead")
    assert removed == ["container dead-mysql", "container dead-app", "network net-dead"]
    assert list(c.api.items) == ["live-mysql", "live-app", "stranger", "net-live"]
    assert reaper.session_objects(c, "dead") == []
    assert reaper.session_objects(c, "live") == ["container live-mysql (None)", "container live-app (None)",
                                              "network net-live"]


def test_reap_removes_sessions_whose_owner_is_gone() -> None:
    c = _client()
    removed = reaper.reap_leftovers(c, alive=lambda owner: owner == "h 1 a")
    assert sorted(removed) == ["container dead-app", "container dead-mysql", "network net-dead"]
    assert [k for k, o in c.api.items.items() if o["kind"] == "network"] == ["net-live"]


def test_owner_alive_is_true_for_this_process_and_other_hosts() -> None:
    assert reaper.owner_alive(reaper.owner_id())
    assert not reaper.owner_alive(reaper.owner_id().rsplit(" ", 1)[0] + " not-its-start-time")
    assert reaper.owner_alive("some-other-host 1 1")  # cannot tell: never touched
    assert not reaper.owner_alive("garbage")


def test_content_hash_changes_with_any_input(tmp_path: Path) -> None:
    f = tmp_path / "a.py"
    f.write_text("x = 1\n")
    h1 = images.content_hash(["base-id", "dockerfile"], [("app/a.py", f)])
    assert h1 == images.content_hash(["base-id", "dockerfile"], [("app/a.py", f)])
    assert h1 != images.content_hash(["base-id2", "dockerfile"], [("app/a.py", f)])
    assert h1 != images.content_hash(["base-iddockerfile"], [("app/a.py", f)])  # parts are length-prefixed
    f.write_text("x = 2\n")
    assert h1 != images.content_hash(["base-id", "dockerfile"], [("app/a.py", f)])


def test_project_files_leave_out_caches_and_vcs(tmp_path: Path) -> None:
    for rel in ("app/x.py", "app/__pycache__/x.cpython-311.pyc", ".git/HEAD", ".venv/bin/python", "y.pyc", "m.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in images.project_files(tmp_path)] == ["m.txt", "app/x.py"]


def test_requirements_pin_installed_versions_and_add_the_projects(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("# comment\nrequests>=2\n-e .\n")
    reqs = images.requirements(tmp_path)
    assert any(r.startswith("django==") for r in reqs) and reqs[-1] == "requests>=2"
    assert not any(r.startswith("-e") for r in reqs)


def test_container_env_points_the_app_at_mysql_on_the_network_and_keeps_the_host_out() -> None:
    env = {"PATH": "/host/bin", "HOME": "/root", "WSGI502_DB_HOST": "127.0.0.1", "WSGI502_DB_PORT": "4321",
           "WSGI502_DB_SOCKET": "/tmp/s", "WSGI502_DB_ROOT_PASSWORD": "r", "WSGI502_DB_DRIVER": "pymysql",
           "DJANGO_SETTINGS_MODULE": "s", "PYTHONPATH": "/tmp/run/django-overlay"}
    out = container_env(env, {"WSGI502_FAULTS": "1"}, "10.88.0.5", overlay=True)
    assert out == {"WSGI502_DB_HOST": "10.88.0.5", "WSGI502_DB_PORT": "3306", "WSGI502_DB_DRIVER": "pymysql",
                   "DJANGO_SETTINGS_MODULE": "s", "PYTHONPATH": "/wsgi502/overlay", "WSGI502_FAULTS": "1",
                   "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize(("text", "value"), [("256m", 256 << 20), ("1g", 1 << 30), ("512k", 512 << 10),
                                             ("1000", 1000), ("1.5g", 3 << 29)])
def test_mem_bytes(text: Any, value: Any) -> None:
    assert mem_bytes(text) == value


def test_matrix_accepts_limits_and_rejects_bad_ones() -> None:
    (cell,) = expand({"cells": {"a": {"server": "uwsgi", "cpus": 1.5, "mem_limit": "256m"}}})
    assert (cell.cpus, cell.mem_limit) == (1.5, "256m")
    assert cell.as_dict()["mem_limit"] == "256m"
    for bad, msg in (({"mem_limit": "lots"}, "mem_limit must look like"), ({"cpus": 0}, "cpus must be > 0"),
                     ({"cpus": "two"}, "cpus must be a number")):
        with pytest.raises(ConfigError, match=msg):  # config/ is pure: ConfigError, turned into UsageError above it
            expand({"cells": {"a": {"server": "uwsgi", **bad}}})


def _in_container(tmp_path: Path, server: str) -> Any:
    from pytest_wsgi502.servers import ServerSpec, make_server
    from pytest_wsgi502.servers.in_container import container_runner

    (cell,) = expand({"cells": {"c": {"server": server, "max_requests": 100}}})
    spec = ServerSpec(cell, tmp_path / "cell", "sampleapp.wsgi:application", tmp_path / "project", port=18001,
                      stats_port=18002)
    return make_server(spec, server, runner=container_runner(None))  # type: ignore[arg-type]  # no engine needed


def test_uwsgi_config_is_rewritten_for_the_container(tmp_path: Path) -> None:
    server = _in_container(tmp_path, "uwsgi")
    s = server.settings()
    assert (s["http-socket"], s["stats"], s["chdir"], s["virtualenv"]) == ("0.0.0.0:8000", "0.0.0.0:9191", "/app",
                                                                           "/opt/venv")
    assert s["max-requests"] == 100 and s["strict"] is True  # the cell's own settings are untouched
    assert server.address == "127.0.0.1:18001"  # what the proxy on the host targets (published there)
    assert server.argv() == ["/opt/venv/bin/uwsgi", "--ini", "/wsgi502/cell/uwsgi.ini"]
    assert str(tmp_path) not in server.render()


def test_gunicorn_config_is_rewritten_for_the_container(tmp_path: Path) -> None:
    server = _in_container(tmp_path, "gunicorn")
    text = server.render()
    assert "bind = ['0.0.0.0:8000']" in text and "chdir = '/app'" in text
    assert "_WSGI502_EVENTS = '/wsgi502/cell/gunicorn-events.jsonl'" in text  # written where the host reads it
    assert server.events_path == tmp_path / "cell" / "gunicorn-events.jsonl"
    assert str(tmp_path) not in text


# --- issue 12: no fixed root password, no os.environ mutation ----------------------------------------------------

def test_opening_a_session_leaves_os_environ_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import docker

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("TESTCONTAINERS_RYUK_DISABLED", raising=False)

    def no_engine(**kwargs: Any) -> None:
        raise docker.errors.DockerException("no engine in a unit test")

    monkeypatch.setattr(docker, "DockerClient", no_engine)
    before = dict(os.environ)
    with pytest.raises(ServiceError, match="container engine at unix:///nowhere"):
        session.ContainerSession("unix:///nowhere", tmp_path, None, tmp_path).open()
    assert dict(os.environ) == before  # servers started later inherit os.environ: nothing may leak into it


def test_testcontainers_settings_are_scoped_and_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from testcontainers.core.config import testcontainers_config

    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "false")  # a user's value no longer silently wins
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    saved = testcontainers_config.ryuk_disabled
    with db.testcontainers_settings("unix:///e.sock") as kw:
        assert testcontainers_config.ryuk_disabled is True
        assert kw["environment"] == {"DOCKER_HOST": "unix:///e.sock"}
        os.environ["DOCKER_HOST"] = "ssh://from-a-docker-context"  # what testcontainers' client does
    assert "DOCKER_HOST" not in os.environ
    assert testcontainers_config.ryuk_disabled == saved


class FakeMySqlContainer:
    made: ClassVar[list[FakeMySqlContainer]] = []

    def __init__(self, image: Any, **kwargs: Any) -> None:
        from testcontainers.core.config import testcontainers_config

        self.image, self.kwargs, self.ports = image, kwargs, {"3306": None}
        self.ryuk_disabled_at_init = testcontainers_config.ryuk_disabled
        self.environ_at_start: dict[str, str] = {}
        FakeMySqlContainer.made.append(self)

    def with_name(self, name: Any) -> Any:
        return self

    def with_kwargs(self, **kwargs: Any) -> Any:
        return self

    def start(self) -> Any:
        self.environ_at_start = dict(os.environ)
        return self

    def get_wrapped_container(self) -> Any:
        class Wrapped:
            def __init__(self) -> None:
                self.attrs = {"NetworkSettings": {"Networks": {"net": {"IPAddress": "10.88.0.5"}}}}

            def reload(self) -> None:
                pass

        return Wrapped()


def test_container_mysql_gets_random_passwords_and_the_app_env_no_root(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import testcontainers.community.mysql as tc_mysql

    monkeypatch.setattr(tc_mysql, "MySqlContainer", FakeMySqlContainer)
    monkeypatch.setattr(images, "image_id", lambda client, ref: "sha256:x")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    infos = []
    for _ in range(2):
        s = session.ContainerSession("unix:///e.sock", tmp_path, SimpleNamespace(mysql_image="img"), tmp_path)
        s.client, s.network = object(), SimpleNamespace(name="net")
        monkeypatch.setattr(db, "select_1", lambda *args: "10.11.0-MariaDB")
        infos.append(s.start_mysql())
    a, b = infos
    env = a.env()
    assert a.root_password not in env.values() and not any("ROOT" in k for k in env)
    assert "wsgi502-root" not in (a.root_password, b.root_password) and a.password != "wsgi502"
    assert a.root_password != b.root_password and a.password != b.password and len(a.root_password) >= 24
    assert (a.socket, a.host, env["WSGI502_DB_PASSWORD"]) == ("", "127.0.0.1", a.password)
    assert a.root_password not in repr(a)
    made = FakeMySqlContainer.made[-2:]
    assert made[0].kwargs["root_password"] == a.root_password and made[0].kwargs["password"] == a.password
    assert made[0].kwargs["docker_client_kw"]["environment"] == {"DOCKER_HOST": "unix:///e.sock"}
    assert made[0].ryuk_disabled_at_init is True and "DOCKER_HOST" not in made[0].environ_at_start
