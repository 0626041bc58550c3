"""The two proxy profiles (issue 16 item 4): what each renders, that nginx accepts it, and that every value that
reaches the config is validated or quoted. The behaviours themselves are provoked on loopback in
tests/integration/test_alb_profile.py."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_wsgi502 import nginxlog
from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.proxy import PROFILES, LocalProxy, ProxyConfig, nginx_quoted, render_nginx

NGINX = "/usr/sbin/nginx"
TCP = "127.0.0.1:18001"


def location(text: str) -> str:
    return text[text.index("location / {"):]


def upstream(text: str) -> list[str]:
    """The upstream block's server lines."""
    block = text[text.index("upstream target {"):text.index("        keepalive ", text.index("upstream target {"))]
    return [line.strip() for line in block.splitlines()[1:]]


def test_alb_profile_renders_each_documented_behaviour(tmp_path: Path) -> None:
    text = render_nginx(ProxyConfig(18080, TCP), tmp_path)  # alb is the default
    assert "proxy profile alb" in text.splitlines()[0]
    assert "proxy_next_upstream off;" in location(text)  # no retries
    assert "proxy_connect_timeout 10s;" in location(text)  # 504 after 10 s connecting
    for idle in ("proxy_read_timeout 60s;", "proxy_send_timeout 60s;", "client_header_timeout 60s;",
                 "client_body_timeout 60s;"):
        assert idle in text  # the 60 s idle timeout, both sides
    assert "large_client_header_buffers 4 16k;" in text  # 16K a line, 64K in all, else 400
    assert upstream(text) == [f'server "{TCP}" max_fails=0;']  # no passive health, one target
    assert "map $status $lb_status { 499 460; default $status; }" in text  # 460 in the access log


def test_nginx_profile_keeps_nginx_defaults_and_names_a_tcp_target_like_localhost(tmp_path: Path) -> None:
    text = render_nginx(ProxyConfig(18080, TCP, profile="nginx"), tmp_path)
    assert "proxy profile nginx" in text.splitlines()[0]
    for default in ("proxy_next_upstream", "proxy_connect_timeout", "large_client_header_buffers", "max_fails",
                    "fail_timeout", "client_header_timeout"):
        assert default not in text, default  # nginx's own default applies
    assert "proxy_read_timeout 60s;" in text  # the session's idle timeout, as in the alb profile
    assert upstream(text) == [f'server "{TCP}";', 'server "[::1]:18001";']  # localhost's two addresses
    assert "map $status $lb_status {  default $status; }" in text  # 499 stays 499
    unix = render_nginx(ProxyConfig(18080, "unix:/tmp/s/server.sock", profile="nginx"), tmp_path)
    assert upstream(unix) == ['server "unix:/tmp/s/server.sock";']  # one address: nginx ignores max_fails


def test_the_access_log_status_is_the_lbs_and_nginxs_own_is_kept() -> None:
    assert '"status":$lb_status' in nginxlog.ACCESS_LOG_FORMAT
    assert '"nginx_status":$status' in nginxlog.ACCESS_LOG_FORMAT


@pytest.mark.parametrize("bad", ["haproxy", "ALB", "", None, 1, ["alb"]])
def test_an_unknown_profile_is_one_line(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^proxy profile must be one of alb, nginx, got ") as exc:
        render_nginx(ProxyConfig(18080, TCP, profile=bad), tmp_path)  # type: ignore[arg-type]
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="proxy profile must be one of alb, nginx"):
        LocalProxy(tmp_path, TCP, 60, "nginx", port=18080, profile=bad)  # type: ignore[arg-type]


def test_local_proxy_stores_the_profile(tmp_path: Path) -> None:
    assert LocalProxy(tmp_path, TCP, 60, "nginx", port=18080).cfg.profile == "alb"
    assert LocalProxy(tmp_path, TCP, 60, "nginx", port=18080, profile="nginx").cfg.profile == "nginx"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("field", "value", "words"), [
    ("connect_timeout", 0, "connect timeout"), ("connect_timeout", float("nan"), "connect timeout"),
    ("connect_timeout", 86_401, "connect timeout"), ("idle_timeout", -1, "idle timeout"),
    ("keepalive", 0, "upstream keepalive"), ("keepalive", 1.5, "upstream keepalive"),
    ("listen_port", 70_000, "proxy port"), ("upstream", "127.0.0.1:99999", "upstream port"),
    ("upstream", "127.0.0.1:8000; server evil:1", "upstream must be"), ("upstream", "unix:", "upstream must be"),
    ("upstream", 'unix:/tmp/a"b', "upstream"), ("upstream", "example.org", "upstream must be"),
])
def test_every_number_is_validated_in_both_profiles(tmp_path: Path, profile: str, field: str, value: object,
                                                    words: str) -> None:
    kwargs = {"listen_port": 18080, "upstream": TCP, "profile": profile, field: value}
    with pytest.raises(ConfigError) as exc:
        render_nginx(ProxyConfig(**kwargs), tmp_path)  # type: ignore[arg-type]
    assert words in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("up", ["127.0.0.1:8000", "[::1]:8000", "localhost:8000", "unix:/tmp/a b;c/server.sock"])
def test_targets_the_harness_makes_are_taken(tmp_path: Path, up: str) -> None:
    for profile in PROFILES:
        assert upstream(render_nginx(ProxyConfig(18080, up, profile=profile), tmp_path))[0].startswith(f'server "{up}"')


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(profile=st.sampled_from(PROFILES), up=st.text(max_size=40))
def test_an_upstream_is_one_quoted_argument_or_refused(tmp_path: Path, profile: str, up: str) -> None:
    """Whatever the upstream text, it reaches the config only as one double-quoted argument nginx reads back as
    is; the ::1 twin is built from digits only."""
    try:
        text = render_nginx(ProxyConfig(18080, up, profile=profile), tmp_path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    servers = upstream(text)
    assert servers[0] == f"server {nginx_quoted(up, 'upstream')}" + (" max_fails=0;" if profile == "alb" else ";")
    assert all(re.fullmatch(r'server "\[::1\]:\d{1,5}";', s) for s in servers[1:])


def nginx_t(tmp_path: Path, cfg: ProxyConfig) -> subprocess.CompletedProcess[str]:
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "nginx-temp" / kind).mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx(cfg, tmp_path), encoding="utf-8")
    return subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "e.log")],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed")
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("up", [TCP, "unix:/tmp/wsgi502-x/server.sock"])
def test_nginx_accepts_both_profiles(tmp_path: Path, profile: str, up: str) -> None:
    user = "root" if os.geteuid() == 0 else None
    out = nginx_t(tmp_path, ProxyConfig(18080, up, profile=profile, user=user))
    assert out.returncode == 0, out.stderr
