import asyncio

import httpx
import pytest

from pytest_wsgi502.load.engine import (
    Endpoint,
    LoadSpec,
    RemoteTargetError,
    check_loopback,
    drive,
    generator_verdict,
    run,
    slot_time,
)
from pytest_wsgi502.metrics.stats import Stats

BASE = "http://127.0.0.1:9"


def spec(**kw):
    return LoadSpec(**{"base_url": BASE, "concurrency": 4, "duration": 5.0, "max_requests": 200, **kw})


def drive_stats(s, factory, verify=None):
    return asyncio.run(drive(s, factory, verify))[0]


def counter_app(request: httpx.Request) -> httpx.Response:
    n = int(request.url.path.rsplit("/", 1)[1])
    return httpx.Response(200, text=f'{{"id": {n}, "hits": 1}}')


def test_budget_bounds_requests_and_bodies_are_verified():
    stats = drive_stats(spec(path="/api/counter/{n}", verify_contains='"id": {n},'),
                        lambda: httpx.MockTransport(counter_app))
    d = stats.to_dict()
    assert d["requests"] == 200 and d["status_counts"] == {"200": 200} and d["error_count"] == 0


def test_wrong_body_is_a_verify_error():
    wrong = httpx.MockTransport(lambda r: httpx.Response(200, text='{"id": 0, "hits": 1}'))
    d = drive_stats(spec(path="/c/{n}", verify_contains='"id": {n},', n_max=50), lambda: wrong).to_dict()
    assert d["errors"]["verify"] == 200 and d["error_rate"] == 1.0


def test_verify_callable_sees_httpx_responses():
    seen = []

    def verify(response: httpx.Response) -> bool:
        seen.append(type(response))
        return response.json()["hits"] == 1

    d = drive_stats(spec(path="/c/{n}"), lambda: httpx.MockTransport(counter_app), verify).to_dict()
    assert d["error_count"] == 0 and set(seen) == {httpx.Response} and len(seen) == 200


def test_request_mix_follows_weights():
    paths = []

    def app(request):
        paths.append(request.url.path)
        return httpx.Response(200, text="a" if request.url.path == "/a" else "b")

    mix = (Endpoint("/a", 3, "a"), Endpoint("/b", 1, "b"))
    d = drive_stats(spec(mix=mix, max_requests=4000), lambda: httpx.MockTransport(app)).to_dict()
    assert d["error_count"] == 0
    assert paths.count("/a") / len(paths) == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize(
    ("exc", "klass"),
    [
        (httpx.ConnectError("refused"), "connect"),
        (httpx.ReadError("reset"), "reset"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.RemoteProtocolError("junk"), "protocol"),
    ],
)
def test_transport_failures_are_counted_never_raised(exc, klass):
    def boom(request):
        raise exc

    d = drive_stats(spec(max_requests=20), lambda: httpx.MockTransport(boom)).to_dict()
    assert d["errors"][klass] == 20 and d["requests"] == 20 and d["responses"] == 0


def test_status_errors_count_in_error_rate_and_the_timeline():
    seq = iter([200, 502, 200, 500] * 50)
    d = drive_stats(spec(max_requests=200, concurrency=1),
                    lambda: httpx.MockTransport(lambda r: httpx.Response(next(seq)))).to_dict()
    assert d["status_counts"] == {"200": 100, "500": 50, "502": 50}
    assert d["error_rate"] == pytest.approx(0.5)
    assert sum(w["requests"] for w in d["timeline"]) == 200
    assert sum(w["errors"].get("502", 0) for w in d["timeline"]) == 50


def test_warmup_excludes_the_first_seconds_from_latency_but_not_from_errors():
    async def app(request):
        await asyncio.sleep(0.01)
        return httpx.Response(502 if asyncio.get_running_loop().time() - t0[0] < 0.1 else 200)

    t0 = [0.0]

    async def go():
        t0[0] = asyncio.get_running_loop().time()
        return await drive(spec(duration=0.6, warmup=0.2, max_requests=10**9, concurrency=2),
                           lambda: httpx.MockTransport(app))

    s = asyncio.run(go())[0]
    d = s.to_dict()
    assert d["status_counts"].get("502", 0) > 0 and d["error_count"] == d["status_counts"]["502"]  # counted
    assert 0 < s.warmup_requests < s.requests and s.histogram.get_total_count() == s.responses - s.warmup_requests
    assert d["warmup"]["seconds"] == 0.2


def test_deadline_bounds_a_run_with_unlimited_budget():
    async def slow(request):
        await asyncio.sleep(0.01)
        return httpx.Response(200)

    s = drive_stats(spec(duration=0.3, max_requests=10**9), lambda: httpx.MockTransport(slow))
    assert 0 < s.requests < 4 * 0.3 / 0.01 * 1.5


def test_hung_requests_end_as_timeouts_after_the_drain():
    async def hang(request):
        await asyncio.sleep(3600)

    d = drive_stats(spec(duration=0.1, drain=0.1), lambda: httpx.MockTransport(hang)).to_dict()
    assert d["errors"]["timeout"] == 4


def test_dead_target_ends_the_run_with_a_reason():
    async def main():
        return await drive(spec(duration=30, max_requests=10**9, base_url="http://127.0.0.1:1"))

    stats, engine = asyncio.run(main())
    assert engine["aborted"] and "refused every connection" in engine["aborted"]
    assert stats.duration < 10 and stats.errors["connect"] > 0


def test_open_loop_schedule_and_ramp():
    s = spec(mode="open", rate=100)
    assert [slot_time(i, s) for i in (0, 1, 100)] == [0, 0.01, 1.0]
    ramp = spec(mode="ramp", start_rate=0, rate=200, duration=10)
    # linear 0 -> 200 req/s over 10 s: 1000 requests in all, the first half-time holds a quarter of them
    assert slot_time(1000, ramp) == pytest.approx(10)
    assert slot_time(250, ramp) == pytest.approx(5)


def test_open_loop_sends_at_the_rate():
    d = drive_stats(spec(mode="open", rate=200, duration=1.0, max_requests=10**6),
                    lambda: httpx.MockTransport(lambda r: httpx.Response(200))).to_dict()
    assert d["requests"] == pytest.approx(200, abs=5)


def test_open_loop_latency_counts_from_the_intended_time():
    """One connection at 100 req/s against a server that takes 50 ms: each request waits for the previous
    one, so it starts later and later than intended, and the latency must include that wait."""
    async def slow(request):
        await asyncio.sleep(0.05)
        return httpx.Response(200)

    d = drive_stats(spec(mode="open", rate=100, concurrency=1, duration=1.0, max_requests=10**6),
                    lambda: httpx.MockTransport(slow)).to_dict()
    assert d["latency_ms"]["max"] > 400  # the 20th request was due at 0.19 s and is answered at ~1.0 s


def test_generator_bound_rules():
    s = Stats()
    assert generator_verdict(spec(), s, [{"cpu_percent": 95}])[0]
    assert generator_verdict(spec(), s, [{"cpu_percent": 20, "loop_lag_p99_ms": 40}])[0]
    assert generator_verdict(spec(mode="open", rate=10), s, [{"cpu_percent": 20, "send_lag_p99_ms": 15}])[0]
    assert generator_verdict(spec(), s, [{"cpu_percent": 20, "loop_lag_p99_ms": 1}]) == (False, None)
    # a starved engine never reaches 90 % itself: the CPU the intended rate needs still gives it away
    starved = {"cpu_percent": 30, "cpu_s": 1.0, "spin_s": 0.2, "requests": 10_000}  # 80 us of work a request
    bound, why = generator_verdict(spec(mode="open", rate=20_000), s, [starved])
    assert bound and "needs 1.60 cores for 20000 req/s at 80 us" in why
    assert generator_verdict(spec(mode="open", rate=300), s, [starved]) == (False, None)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"mode": "burst"}, "load mode 'burst' unknown"),
        ({"mode": "open"}, "needs a rate"),
        ({"processes": 8, "concurrency": 4}, "need at least as many connections"),
        ({"mix": (Endpoint("/a", 0),)}, r"mix\[0\]\.weight must be > 0"),
        ({"warmup": 5.0}, r"warmup \(5s\) must be shorter than the duration \(5s\)"),
        ({"warmup": -1}, "warmup must be >= 0"),
    ],
)
def test_bad_specs(kw, message):
    with pytest.raises(ValueError, match=message):
        spec(**kw).validate()


def test_share_splits_connections_and_budget():
    parts = [spec(concurrency=5, max_requests=11, processes=2).share(p) for p in (0, 1)]
    assert [p.concurrency for p in parts] == [3, 2] and [p.max_requests for p in parts] == [6, 5]


def test_run_reports_engine_cost():
    out = run(spec(max_requests=50), lambda: httpx.MockTransport(lambda r: httpx.Response(200)))
    assert out["stats"].requests == 50
    assert out["engine"]["cpu_us_per_request"] > 0 and out["generator_bound"] in (True, False)


def test_remote_targets_are_refused_unless_allowed():
    check_loopback("http://127.0.0.1:80")
    check_loopback("http://[::1]:80")
    check_loopback("http://localhost:80")
    with pytest.raises(RemoteTargetError, match=r"non-loopback 10\.1\.2\.3"):
        check_loopback("http://10.1.2.3:80")
    with pytest.raises(RemoteTargetError):
        run(LoadSpec(base_url="http://10.1.2.3"))


def test_target_that_resets_everything_ends_the_run():
    def reset(request):
        raise httpx.ReadError("reset")

    stats, engine = asyncio.run(drive(spec(duration=30, max_requests=10**9), lambda: httpx.MockTransport(reset)))
    assert engine["aborted"] and "gave no response (reset)" in engine["aborted"]
    assert stats.duration < 10


def test_free_ports_are_distinct():
    from pytest_wsgi502.services.process import free_ports

    for _ in range(50):
        ports = free_ports(3)
        assert len(set(ports)) == 3


def test_a_stop_rule_sees_the_merged_live_stats_of_every_engine_process():
    """duration=auto with --wsgi-processes > 1 (a one-line ConfigError before): the processes send live stats, the
    rule sees their merge, and its reason halts all of them."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    seen: list[int] = []

    def rule(stats: Stats) -> str | None:
        seen.append(stats.requests)
        return "enough" if stats.requests >= 300 else None

    try:
        s = spec(base_url=f"http://127.0.0.1:{server.server_address[1]}", processes=2, duration=60.0,
                 max_requests=10**9, mode="open", rate=200.0)
        out = run(s, stop=rule)
    finally:
        server.shutdown()
        server.server_close()
    assert out["stopped"] == "enough" and out["engine_error"] is None, out
    assert seen and seen[-1] >= 300 and seen == sorted(seen)  # cumulative merged counts
    assert 300 <= out["stats"].requests < 300 + 3 * 200  # halted within about a second of the reason
    assert all(e["requests"] > 0 and e["stopped"] == "enough" for e in out["engine"]["per_process"])
    assert out["stats"].duration < 10
