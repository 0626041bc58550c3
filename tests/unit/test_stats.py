import pytest

from pytest_wsgi502.metrics.stats import Stats


def make(samples, started=1000.0):
    s = Stats(started=started)
    for status, lat, err in samples:
        s.record(status, lat, started + lat, err)
    s.ended = started + 10
    return s


def test_counts_rates_and_classes():
    s = make([(200, 0.010, None)] * 97 + [(502, 0.002, None), (None, 0.001, "reset"), (200, 0.01, "verify")])
    d = s.to_dict()
    assert d["requests"] == 99 + 0 + 1  # 99 responses + 1 transport failure; "verify" is on a response
    assert d["responses"] == 99
    assert d["status_counts"] == {"200": 98, "502": 1}
    assert d["errors"] == {"connect": 0, "reset": 1, "timeout": 0, "protocol": 0, "verify": 1}
    assert d["error_count"] == 3
    assert d["error_rate"] == pytest.approx(3 / 100)
    assert d["http_5xx"] == 1
    assert d["rps"] == pytest.approx(10.0)


def test_percentiles_within_histogram_precision():
    s = make([(200, ms / 1000, None) for ms in range(1, 1001)])
    lat = s.to_dict()["latency_ms"]
    assert lat["p50"] == pytest.approx(500, rel=1e-3)
    assert lat["p99"] == pytest.approx(990, rel=1e-3)
    assert lat["max"] == pytest.approx(1000, rel=1e-3)


def test_merge_is_exact():
    a = make([(200, ms / 1000, None) for ms in range(1, 501)], started=1000.0)
    b = make([(200, ms / 1000, None) for ms in range(501, 1001)], started=1002.0)
    whole = make([(200, ms / 1000, None) for ms in range(1, 1001)])
    merged = a.merge(b).to_dict()
    assert merged["requests"] == 1000
    assert merged["latency_ms"] == whole.to_dict()["latency_ms"]
    assert a.started == 1000.0 and a.ended == 1012.0


def test_clamps_beyond_60s_and_counts_it():
    s = make([(504, 75.0, None)])
    assert s.clamped == 1
    assert s.to_dict()["latency_ms"]["max"] == pytest.approx(60_000, rel=1e-3)


def test_no_responses_gives_no_latency():
    d = make([(None, 0.0, "connect")] * 3).to_dict()
    assert d["latency_ms"]["p99"] is None and d["error_rate"] == 1.0


def test_warmup_requests_count_as_requests_and_errors_never_in_latency_or_throughput():
    # measured: uwsgi-8w's first 0.5 s (cold workers, first DB connections) carried its p99 CV (16.5 % -> 4.9 %)
    s = Stats(started=1000.0, warmup_until=1001.0)
    for k in range(10):  # sent within the warm-up: slow, and one 502
        s.record(502 if k == 0 else 200, 0.5, 1000.0 + k * 0.05 + 0.5)
    for k in range(90):  # steady
        s.record(200, 0.01, 1001.0 + k * 0.1 + 0.01)
    s.ended = 1010.0
    d = s.to_dict()
    assert d["requests"] == 100 and d["error_count"] == 1 and d["error_rate"] == 0.01
    assert d["latency_ms"]["max"] < 11 and s.histogram.get_total_count() == 90  # no warm-up latency
    assert d["rps"] == 10.0  # 90 requests over the 9 s after the warm-up, not 100 / 10
    assert d["warmup"] == {"seconds": 1.0, "requests": 10, "note": d["warmup"]["note"]}
    assert sum(w["requests"] for w in d["timeline"]) == 100  # the timeline shows the transient
    back = Stats.from_wire(s.to_wire())
    assert back.to_dict() == d
    merged = Stats.from_wire(s.to_wire()).merge(back)
    assert merged.warmup_requests == 20 and merged.to_dict()["rps"] == 20.0


def test_without_warmup_nothing_changes():
    s = make([(200, 0.5, None), (200, 0.01, None)])
    d = s.to_dict()
    assert "warmup" not in d and d["rps"] == 0.2 and s.histogram.get_total_count() == 2


def test_throughput_counts_completions_inside_the_send_window_not_the_drain():
    """A straggler finishing 1.2 s after a 10 s window counts as a request (and its latency), but neither it nor
    its 1.2 s stretch the throughput: 1,000 completions in the window are 100 req/s, not 1,001 / 11.2 s."""
    s = Stats(started=1000.0, window_end=1010.0)
    for i in range(1000):
        s.record(200, 0.01, 1000.0 + (i + 1) * 0.01)
    s.record(200, 1.5, 1011.2)
    s.ended = 1011.2
    d = s.to_dict()
    assert d["requests"] == 1001 and s.late == 1 and d["rps"] == 100.0
    assert d["latency_ms"]["max"] == pytest.approx(1500, rel=0.01) and d["duration_s"] == 11.2
    merged = Stats.from_wire(s.to_wire()).merge(Stats.from_wire(s.to_wire()))
    assert merged.late == 2 and merged.to_dict()["rps"] == 200.0
    # a run that ended before its window (its request budget): to its last completion
    short = Stats(started=1000.0, window_end=1010.0)
    for i in range(50):
        short.record(200, 0.01, 1000.0 + (i + 1) * 0.1)
    short.ended = 1005.0
    assert short.to_dict()["rps"] == 10.0 and short.late == 0
