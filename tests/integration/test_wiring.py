"""Settings wired through a real cell (issues 14, 16, 17): each a short matrix run on the sample app."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

OPEN_CELL = """
[cells.w]
server = "gunicorn"
workers = 2
load_mode = "open"
rate = 100
concurrency = 8
duration = 3
slo = ["error_rate<0.05"]
"""


def test_warm_up_requests_are_sent_and_counted_but_not_measured(matrix, tmp_path):
    """--wsgi-warmup=1s: the proxy logged every request the result counts (the warm-up included); the latency
    histogram and req/s hold only those sent after the first second."""
    m = tmp_path / "w.toml"
    m.write_text(OPEN_CELL)
    r = matrix.run(f"--wsgi-matrix-file={m}", "--wsgi-warmup=1s")
    assert r.returncode == 0, r.stdout + r.stderr
    cell = matrix.cells()["w"]
    assert cell["load"]["spec"]["warmup"] == 1.0 and cell["load"]["sources"]["warmup"] == "option"
    warm = cell["warmup"]["requests"]
    assert 80 <= warm <= 120, cell["warmup"]  # 1 s at 100 req/s
    assert cell["requests"] == sum(cell["proxy"]["status_counts"].values()) == cell["responses"]
    measured = HdrHistogram.decode(cell["histogram"].encode())  # HdrHistogram V2, base64
    assert measured.get_total_count() == cell["requests"] - warm
    assert 85 <= cell["rps"] <= 115, cell["rps"]  # (requests - warm-up) / (end - warm-up end)


def test_a_matrix_cell_on_two_locust_generators(matrix, tmp_path):
    """--wsgi-distributed=locust --wsgi-generators=2 (issue 17 item 2): the cell's load runs on Locust's runtime,
    the result is the usual one (a pass, every request in the proxy's log) and the JSON says it was distributed."""
    m = tmp_path / "w.toml"
    m.write_text(OPEN_CELL)
    r = matrix.run(f"--wsgi-matrix-file={m}", "--wsgi-distributed=locust", "--wsgi-generators=2")
    assert r.returncode == 0, r.stdout + r.stderr
    cell = matrix.cells()["w"]
    assert cell["slo"]["outcome"] == "pass", cell["slo"]
    dist = cell["load"]["distributed"]
    assert (dist["runtime"], dist["generators"]) == ("locust", 2), dist
    assert cell["engine"]["processes"] == 2 and len(cell["engine"]["per_process"]) == 2
    assert 250 <= cell["requests"] == sum(cell["proxy"]["status_counts"].values()), cell["requests"]
    assert (matrix.cell_dir("w") / "locust" / "master.log").is_file()
