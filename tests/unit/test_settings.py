import pytest

from pytest_wsgi502.config.settings import SETTINGS, parse_duration, resolve


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
        ({"wsgi502_duration": "0s"}, "must be > 0"),
        ({"wsgi502_concurrency": "-2"}, "--wsgi-concurrency='-2': must be > 0"),
        ({"wsgi502_requests": "many"}, "not an integer"),
        ({"wsgi502_backend": "k8s"}, "unknown backend 'k8s'"),
        ({"wsgi502_slo": "p99 fast"}, "bad SLO"),
    ],
)
def test_bad_values_name_their_source(opts, message):
    with pytest.raises(pytest.UsageError) as info:
        resolve(opts, {}, {})
    assert message in str(info.value)


def test_env_error_names_the_variable():
    with pytest.raises(pytest.UsageError, match="WSGI502_DURATION='x'"):
        resolve({}, {"WSGI502_DURATION": "x"}, {})


def test_every_setting_has_consistent_names():
    for s in SETTINGS:
        assert s.option == "--wsgi-" + s.name.replace("_", "-")
        assert s.ini == "wsgi_" + s.name and s.env == "WSGI502_" + s.name.upper()
