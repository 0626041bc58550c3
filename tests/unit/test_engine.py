import asyncio

import httpx
import pytest

from pytest_wsgi502.load.engine import LoadSpec, RemoteTargetError, check_loopback, run, run_closed_loop

BASE = "http://127.0.0.1:9"


def spec(**kw):
    return LoadSpec(**{"base_url": BASE, "concurrency": 4, "duration": 5.0, "max_requests": 200, **kw})


def counter_app(request: httpx.Request) -> httpx.Response:
    n = int(request.url.path.rsplit("/", 1)[1])
    return httpx.Response(200, text=f'{{"id": {n}, "hits": 1}}')


def test_budget_bounds_requests_and_bodies_are_verified():
    stats = asyncio.run(run_closed_loop(
        spec(path="/api/counter/{n}", verify_contains='"id": {n},'), lambda: httpx.MockTransport(counter_app)))
    d = stats.to_dict()
    assert d["requests"] == 200 and d["status_counts"] == {"200": 200} and d["error_count"] == 0


def test_wrong_body_is_a_verify_error():
    wrong = httpx.MockTransport(lambda r: httpx.Response(200, text='{"id": 0, "hits": 1}'))
    d = asyncio.run(run_closed_loop(spec(path="/c/{n}", verify_contains='"id": {n},', n_max=50),
                                    lambda: wrong)).to_dict()
    assert d["errors"]["verify"] == 200 and d["error_rate"] == 1.0


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

    d = asyncio.run(run_closed_loop(spec(max_requests=20), lambda: httpx.MockTransport(boom))).to_dict()
    assert d["errors"][klass] == 20 and d["requests"] == 20 and d["responses"] == 0


def test_status_errors_count_in_error_rate():
    seq = iter([200, 502, 200, 500] * 50)
    d = asyncio.run(run_closed_loop(spec(max_requests=200, concurrency=1),
                                    lambda: httpx.MockTransport(lambda r: httpx.Response(next(seq))))).to_dict()
    assert d["status_counts"] == {"200": 100, "500": 50, "502": 50}
    assert d["error_rate"] == pytest.approx(0.5)


def test_deadline_bounds_a_run_with_unlimited_budget():
    async def slow(request):
        await asyncio.sleep(0.01)
        return httpx.Response(200)

    d = asyncio.run(run_closed_loop(spec(duration=0.3, max_requests=10**9), lambda: httpx.MockTransport(slow)))
    assert 0 < d.requests < 4 * 0.3 / 0.01 * 1.5


def test_hung_requests_end_as_timeouts_after_the_drain():
    async def hang(request):
        await asyncio.sleep(3600)

    d = asyncio.run(run_closed_loop(spec(duration=0.1, drain=0.1), lambda: httpx.MockTransport(hang))).to_dict()
    assert d["errors"]["timeout"] == 4


def test_run_reports_engine_cost():
    out = run(spec(max_requests=50), lambda: httpx.MockTransport(lambda r: httpx.Response(200)))
    assert out["stats"].requests == 50
    assert out["engine"]["cpu_us_per_request"] > 0


def test_remote_targets_are_refused_unless_allowed():
    check_loopback("http://127.0.0.1:80")
    check_loopback("http://[::1]:80")
    check_loopback("http://localhost:80")
    with pytest.raises(RemoteTargetError, match=r"non-loopback 10\.1\.2\.3"):
        check_loopback("http://10.1.2.3:80")
    with pytest.raises(RemoteTargetError):
        asyncio.run(run_closed_loop(LoadSpec(base_url="http://10.1.2.3")))
