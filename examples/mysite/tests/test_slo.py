"""This project's SLOs, asserted in its own test suite (run with `pytest --wsgi-matrix`)."""

import pytest


@pytest.mark.wsgi_slo("p99<500ms", "kills==0")
def test_matrix_meets_slo(wsgi_cell_run):
    """One test per cell of wsgi-matrix.toml, at the session's load (--wsgi-duration, --wsgi-rate ...)."""
    wsgi_cell_run.assert_slo()


def test_open_loop_at_production_rate(wsgi_server, wsgi_load):
    """gunicorn sync with 4 workers at 100 req/s, open loop: the production target, asserted directly."""
    target = wsgi_server({"server": "gunicorn", "workers": 4})
    # 300 requests can show an error rate below 1e-2 at 95 % confidence, not below 1e-3
    result = wsgi_load(target, mode="open", rate=100, duration=3, slo=["error_rate<0.02", "p99<300ms"])
    assert result.requests >= 250
    assert result.status_counts["200"] == result.requests
    result.assert_slo()


def test_graceful_reload_loses_no_request(wsgi_server, wsgi_load):
    """A deploy that reloads gunicorn (SIGHUP 2 s into the load) under 300 req/s loses no request."""
    target = wsgi_server({"server": "gunicorn", "workers": 4, "actions": [{"at": "2s", "do": "hup"}]})
    result = wsgi_load(target, mode="open", rate=300, duration=5, slo=["errors==0"])
    assert [a["action"] for a in result.telemetry["actions"]] == ["hup"]  # it was sent, during the load
    result.assert_slo()


def test_rolling_deploy_loses_no_request(wsgi_server, wsgi_load):
    """A rolling deploy of 2 gunicorn instances under 300 req/s loses no request: each is deregistered, routed to
    for 1 s more (the LB's propagation lag), stopped gracefully after a 2 s preStop sleep and replaced."""
    target = wsgi_server.rolling({"server": "gunicorn", "workers": 2}, at="2s", lag="1s", prestop="2s")
    result = wsgi_load(target, mode="open", rate=300, duration=15, slo=["errors==0"])
    ready = [p for p in result.telemetry["action_phases"] if p["phase"] == "ready"]
    assert len(ready) == 2  # both instances replaced and back in the load balancer, during the load
    result.assert_slo()
