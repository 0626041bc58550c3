import math

import pytest

from pytest_wsgi502.config.settings import BY_NAME, SETTINGS, parse_duration, resolve
from pytest_wsgi502.config.values import ConfigError


def test_precedence_option_env_ini_default():
    opts = {"wsgi502_duration": "3s"}
    env = {"WSGI502_DURATION": "4s", "WSGI502_CONCURRENCY": "8"}
    ini = {"wsgi_duration": "5s", "wsgi_concurrency": "16", "wsgi_requests": "100"}
    s = resolve(opts, env, ini)
    assert (s.duration, s.source("duration")) == (3.0, "option")
    assert (s.concurrency, s.source("concurrency")) == (8, "env")
    assert (s.requests, s.source("requests")) == (100, "ini")
    assert (s.timeout, s.source("timeout")) == (65.0, "default")
    assert s.json is None


@pytest.mark.parametrize(("text", "seconds"), [("10", 10), ("10s", 10), ("250ms", 0.25), ("2m", 120), ("1.5s", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"wsgi502_duration": "soon"}, "--wsgi-duration='soon': not a duration"),
        ({"wsgi502_duration": "0s"}, "must be >= 0.001"),
        ({"wsgi502_concurrency": "-2"}, "--wsgi-concurrency='-2': the value must be >= 1"),
        ({"wsgi502_requests": "many"}, "must be an integer"),
        ({"wsgi502_backend": "k8s"}, "unknown backend 'k8s'"),
        ({"wsgi502_slo": "p99 fast"}, "bad SLO"),
        # issue 12 item 5: non-finite and absurd numbers
        ({"wsgi502_rate": "nan"}, "--wsgi-rate='nan': a rate in requests/s must be a finite number"),
        ({"wsgi502_rate": "inf"}, "must be a finite number"),
        ({"wsgi502_rate": "-inf"}, "must be a finite number"),
        ({"wsgi502_rate": "1e7"}, "<= 1000000"),
        ({"wsgi502_start_rate": "NaN"}, "must be a finite number"),
        ({"wsgi502_duration": "1e999"}, "--wsgi-duration='1e999': not a finite duration"),
        ({"wsgi502_duration": "25h"}, "not a duration"),
        ({"wsgi502_duration": "1441m"}, "<= 86400"),
        ({"wsgi502_concurrency": "99999999999999999999"}, "<= 100000"),
        ({"wsgi502_concurrency": "100001"}, "<= 100000"),
        ({"wsgi502_processes": "1e3"}, "must be an integer"),
        ({"wsgi502_requests": str(10**12 + 1)}, "<= 1000000000000"),
        ({"wsgi502_idle_timeout": "1e999"}, "--wsgi-idle-timeout='1e999': not a finite duration"),
        ({"wsgi502_idle_timeout": "0"}, "must be > 0"),
        ({"wsgi502_idle_timeout": "86401"}, "<= 86400"),
        ({"wsgi502_timeout": "0.5"}, "must be >= 1"),
        ({"wsgi502_think_time": "1e309ms"}, "not a finite duration"),
        # SLOs and checks
        ({"wsgi502_slo": "p99<1e999"}, "p99 limits go up to"),
        ({"wsgi502_slo": "kills==0.5"}, "kills is a count"),
        ({"wsgi502_slo": "error_rate<0"}, "nothing is < 0"),
        ({"wsgi502_slo": "p99<0"}, "give a latency > 0"),
        ({"wsgi502_slo": "p99<1,p99<2"}, "p99 given twice"),
        ({"wsgi502_compare_fail": "p99:1,p99:100%"}, "p99 is checked twice"),
        # strings that reach a request line, Python source, a config file or a path
        ({"wsgi502_path": "//192.0.2.10:8080/api"}, "must not start with '//'"),
        ({"wsgi502_path": "http://198.51.100.7/x"}, "must start with '/'"),
        ({"wsgi502_path": "/a\r\nX-Injected: 1"}, "printable ASCII"),
        ({"wsgi502_app": "x\nexec-pre-app = /bin/sh"}, "must be module:callable"),
        ({"wsgi502_app": "mysite.wsgi"}, "must be module:callable"),
        ({"wsgi502_django_settings": "x; import os"}, "Python module path"),
        ({"wsgi502_chdir": "/tmp\nexec-pre-app = id"}, "one line"),
        ({"wsgi502_matrix_file": "m\x00.toml"}, "one line"),
        ({"wsgi502_save": "a/b"}, "not a run name"),
        ({"wsgi502_strict": "maybe"}, "not a boolean"),
        ({"wsgi502_mode": "burst"}, "load mode 'burst' unknown; choose one of closed, open, ramp"),
    ],
)
def test_bad_values_name_their_source(opts, message):
    with pytest.raises(ConfigError) as info:
        resolve(opts, {}, {})
    assert message in str(info.value)
    assert "\n" not in str(info.value) and "\r" not in str(info.value)


def test_core_error_is_not_pytests():
    """The core raises ConfigError (a ValueError): the pytest edge turns it into a usage error."""
    with pytest.raises(ValueError):
        resolve({"wsgi502_duration": "x"}, {}, {})
    assert not issubclass(ConfigError, pytest.UsageError)


def test_env_error_names_the_variable():
    with pytest.raises(ConfigError, match="WSGI502_DURATION='x'"):
        resolve({}, {"WSGI502_DURATION": "x"}, {})


def test_multi_line_ini_value_is_refused_on_one_line():
    with pytest.raises(ConfigError) as info:
        resolve({}, {}, {"wsgi_chdir": "a\nb"})
    assert str(info.value).startswith("ini wsgi_chdir='a\\nb'") and "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "seconds"), [("0.5", 1.0), ("1.2s", 2.0), ("250ms", 1.0), ("60", 60.0),
                                               ("2m", 120.0)])
def test_idle_timeout_is_whole_seconds_rounded_up(text, seconds):
    """nginx takes whole seconds: 0.5 used to become 'proxy_read_timeout 0s' (no timeout at all)."""
    s = resolve({"wsgi502_idle_timeout": text}, {}, {})
    assert s.idle_timeout == seconds and s.values["idle_timeout"].raw == text


def test_good_values_convert():
    s = resolve({"wsgi502_rate": "1_000", "wsgi502_path": "/api/{n}?x=1", "wsgi502_app": "pkg.wsgi:app.wsgi_app",
                 "wsgi502_slo": "p99<500ms; error_rate<0.1%", "wsgi502_compare_fail": "p99:10%, error_rate:0.0001",
                 "wsgi502_django_settings": "mysite.settings", "wsgi502_requests": "1_000_000_000_000"}, {}, {})
    assert s.rate == 1000.0 and s.path == "/api/{n}?x=1" and s.requests == 10**12
    assert s.slo == ("p99<500ms", "error_rate<0.1%")
    assert [c.text for c in s.compare_fail] == ["p99:10%", "error_rate:0.0001"]


def test_defaults_are_valid_and_finite():
    s = resolve({}, {}, {})
    for name, r in s.values.items():
        if isinstance(r.value, float):
            assert math.isfinite(r.value), name


def test_every_setting_has_consistent_names():
    for s in SETTINGS:
        assert s.option == "--wsgi-" + s.name.replace("_", "-")
        assert s.ini == "wsgi_" + s.name and s.env == "WSGI502_" + s.name.upper()


def test_settings_do_not_import_pytest_or_the_report_layer():
    import subprocess
    import sys

    code = ("import sys; import pytest_wsgi502.config.settings, pytest_wsgi502.config.matrix, pytest_wsgi502.slo; "
            "from pytest_wsgi502.config.settings import resolve; resolve({'wsgi502_compare_fail': 'p99:5%', "
            "'wsgi502_slo': 'p99<1s'}, {}, {}); "
            "print(sorted(m for m in sys.modules if m == 'pytest' "
            "or m.startswith(('_pytest', 'pytest_wsgi502.report'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_idle_timeout_help_says_it_rounds():
    assert "rounded up" in BY_NAME["idle_timeout"].help


@pytest.mark.parametrize(("source", "raw", "message"), [
    ({"wsgi502_proxy_profile": "elb"}, None, "--wsgi-proxy-profile='elb': unknown proxy profile 'elb'; choose one "
                                             "of: alb, nginx"),
    ({}, {"WSGI502_PROXY_PROFILE": "ALB"}, "WSGI502_PROXY_PROFILE='ALB': unknown proxy profile"),
])
def test_proxy_profile_is_alb_or_nginx(source, raw, message):
    assert resolve({}, {}, {}).proxy_profile == "alb"
    r = resolve({}, {}, {"wsgi_proxy_profile": "nginx"}).values["proxy_profile"]
    assert (r.value, r.source) == ("nginx", "ini")
    with pytest.raises(ConfigError) as info:
        resolve(source, raw or {}, {})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_proxy_profiles_are_the_proxys():
    """settings keeps its own tuple (no import of proxy.py, which loads the process layer): they must agree."""
    from pytest_wsgi502.config.matrix import PROXY_PROFILES
    from pytest_wsgi502.proxy import PROFILES

    assert PROXY_PROFILES == PROFILES
