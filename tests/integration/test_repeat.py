"""--wsgi-repeat and baseline_cell end to end: two cells, three repeats each, interleaved, compared."""

TWO_CELLS = """
[defaults]
slo = ["error_rate<=1"]
[cells.base]
server = "gunicorn"
[cells.candidate]
server = "uwsgi"
"""


def test_two_cells_three_repeats_interleaved_and_compared(matrix, tmp_path):
    m = tmp_path / "m.toml"
    m.write_text(TWO_CELLS + 'baseline_cell = "base"\n')
    r = matrix.run(f"--wsgi-matrix-file={m}", "--wsgi-duration=2s", "--wsgi-concurrency=4", "--wsgi-repeat=3",
                   "--wsgi-cells=candidate,base")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    cells = matrix.cells()
    assert list(cells) == ["candidate", "base"]  # one test item, one result per cell
    starts = sorted((rep["started_at"], name) for name, c in cells.items() for rep in c["repeats"])
    # the baseline runs first (duration=auto needs its finished counts to stop a candidate's comparison), then
    # interleaved so drift cancels
    assert [name for _, name in starts] == ["base", "candidate", "candidate", "base", "base", "candidate"]
    for c in cells.values():
        assert len(c["repeats"]) == 3
        assert c["requests"] == sum(rep["requests"] for rep in c["repeats"]) > 0
        rps = c["intervals"]["rps"]
        assert rps["n"] == 3 and rps["lo"] <= rps["mean"] <= rps["hi"], rps
        assert c["slo"]["outcome"] == "pass", c["slo"]
    comparison = cells["candidate"]["comparison"]
    assert comparison["baseline"] == "base"
    assert comparison["confidence"] == 0.95 and "family" not in comparison  # one cell compared with "base"
    assert comparison["metrics"]["error_rate"]["verdict"] == "same"  # 0 errors on both sides
    assert comparison["metrics"]["rps"]["verdict"] in ("better", "worse", "same")
    assert "comparison" not in cells["base"]
    table = out[out.index("wsgi502 matrix"):]
    assert "vs baseline" in table and "±" in table and "95 % t interval over the 3 repeats" in table


def test_a_baseline_without_repeats_runs_once_and_is_the_run_compared_with(matrix, tmp_path):
    """--wsgi-baseline-cell without --wsgi-repeat: the baseline's own item ran it directly and the candidate's
    comparison started it a second time, so the table showed one run and the comparison used another (seen in a
    seed-unix pilot: 0 502s in the table's run, 23 in the compared one)."""
    m = tmp_path / "m.toml"
    m.write_text(TWO_CELLS)
    r = matrix.run(f"--wsgi-matrix-file={m}", "--wsgi-duration=2s", "--wsgi-concurrency=4", "--wsgi-baseline-cell=base",
                   "--wsgi-cells=base,candidate")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in matrix.keep.glob("run-*/cells/*")) == ["base", "candidate"]  # each started once
    cells = matrix.cells()
    assert cells["candidate"]["comparison"]["baseline"] == "base"
    assert cells["base"]["repeats"][0]["started_at"] == cells["base"]["started_at"]
