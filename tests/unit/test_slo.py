import pytest

from pytest_wsgi502.config.values import ConfigError
from pytest_wsgi502.slo import parse_slo, parse_slos, verdict

RESULT = {
    "requests": 10_000, "error_rate": 2e-4, "error_count": 2, "rps": 512.0, "http_5xx": 2,
    "status_counts": {"200": 9998, "502": 2}, "latency_ms": {"p50": 12.0, "p99": 480.0, "max": 1500.0},
    "respawns": 3, "kills": 1,
}


@pytest.mark.parametrize(
    ("text", "metric", "op", "limit"),
    [
        ("error_rate<1e-3", "error_rate", "<", 1e-3),
        (" error_rate <= 0.1% ", "error_rate", "<=", 1e-3),
        ("p99<500ms", "p99", "<", 500.0),
        ("p99<0.5s", "p99", "<", 500.0),
        ("p50<800us", "p50", "<", 0.8),
        ("p99.9<2s", "p99.9", "<", 2000.0),
        ("p95<300", "p95", "<", 300.0),
        ("respawns<=20", "respawns", "<=", 20.0),
        ("kills==0", "kills", "==", 0.0),
        ("rps>=300", "rps", ">=", 300.0),
        ("http_502<1", "http_502", "<", 1.0),
    ],
)
def test_parse(text, metric, op, limit):
    slo = parse_slo(text)
    assert (slo.metric, slo.op) == (metric, op)
    assert slo.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99 500ms", "expected 'metric op value'"),
        ("latency<5", "unknown metric 'latency'"),
        ("p99<5%", "takes us, ms or s"),
        ("respawns<5ms", "takes no unit"),
        ("error_rate<2", "fraction in 0..1"),
        ("kills<3%", "only error_rate takes %"),
        ("p99<-1ms", "expected 'metric op value'"),
        # issue 12 item 5: non-finite, absurd or impossible limits
        ("p99<1e999", "p99 limits go up to 8.64e+07ms"),
        ("p99<1e999s", "limits go up to"),
        ("rps>1e999", "rps limits go up to 1e+06"),
        ("requests>1e13", "requests limits go up to 1e+12"),
        ("kills==0.5", "kills is a count; use a whole number"),
        ("respawns<=2.5", "respawns is a count"),
        ("error_rate<0", "nothing is < 0"),
        ("error_rate<1e999", "fraction in 0..1"),
        ("error_rate<200%", "fraction in 0..1"),
        ("p99<0", "no response takes 0 ms"),
        ("p99<=0s", "no response takes 0 ms"),
        ("kills<0", "nothing is < 0"),
        ("p99<5 x", "expected 'metric op value'"),
    ],
)
def test_bad_slo_is_one_line_config_error(text, message):
    with pytest.raises(ConfigError) as info:
        parse_slo(text)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("p99<1,p99<2", "SLO metric p99 given twice (p99<1, p99<2)"),
        (["p99<1", "p99>0.5"], "p99 given twice"),
        ([5], "bad SLO 5: each SLO is text"),
        (5, "SLOs must be text or a list"),
        ({"p99": 5}, "SLOs must be text or a list"),
        ([None], "bad SLO None"),
    ],
)
def test_bad_slo_list_is_one_line_config_error(spec, message):
    with pytest.raises(ConfigError) as info:
        parse_slos(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_slo_text_round_trips():
    for text in ("error_rate<1e-3", "p99<0.5s", "kills==0", "errors<1e3", "error_rate<=0.1%", "rps>=1000000"):
        slo = parse_slo(text)
        assert parse_slo(slo.text) == slo


def test_parse_list_separators():
    assert [s.text for s in parse_slos("error_rate<1e-3, p99<500ms; kills==0\nrespawns<=2,")] == [
        "error_rate<1e-3", "p99<500ms", "kills==0", "respawns<=2"]


def test_verdict_reports_each_breach_with_value_and_limit():
    v = verdict(parse_slos("error_rate<1e-4, p99<500ms, kills==0, http_502<=2, rps>600"), RESULT)
    assert not v["passed"]
    assert [c["passed"] for c in v["checks"]] == [False, True, False, True, False]
    assert v["failures"] == [
        "error_rate<1e-4: measured 0.0002, limit < 0.0001",
        "kills==0: measured 1, limit == 0",
        "rps>600: measured 512, limit > 600",
    ]


def test_verdict_missing_measurement_fails():
    v = verdict(parse_slos("p99<500ms"), {"latency_ms": {"p99": None}})
    assert not v["passed"] and "not measured" in v["failures"][0]


def test_http_502_absent_means_zero():
    assert verdict(parse_slos("http_502==0"), {"status_counts": {"200": 5}})["passed"]


def test_error_rate_is_judged_at_95_percent_confidence():
    from pytest_wsgi502.slo import error_rate_upper_bound

    assert error_rate_upper_bound(0, 30_000) == pytest.approx(3 / 30_000, rel=0.01)  # rule of three
    assert error_rate_upper_bound(1, 1000) == pytest.approx(4.744e-3, rel=1e-3)  # exact Poisson bound
    assert error_rate_upper_bound(5, 10_000) == pytest.approx(10.51e-4, rel=1e-3)
    few = verdict(parse_slos("error_rate<1e-4"), {"requests": 7000, "error_count": 0, "error_rate": 0.0})
    assert not few["passed"]
    assert few["failures"] == ["error_rate<1e-4: 0 errors in 7000 requests shows only < 0.00043 at 95 %; "
                               "proving < 0.0001 needs >= 29,958 requests with 0 errors"]
    enough = verdict(parse_slos("error_rate<1e-4"), {"requests": 31_000, "error_count": 0, "error_rate": 0.0})
    assert enough["passed"] and enough["checks"][0]["upper_95"] < 1e-4
