"""``python -m pytest_wsgi502.report merge``: refusal with the differing keys, concatenation in matrix order, the
pinned baseline kept once, "not side by side", the verdict and the exit codes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_wsgi502.report import merge
from pytest_wsgi502.report.__main__ import main as report_main
from pytest_wsgi502.report.table import render_table


def cell(name: str, *, outcome: str = "pass", shard: tuple[int, int, int, bool, int] | None = None,
         baseline: str | None = None, requests: int = 100) -> dict[str, Any]:
    """A cell result as the plugin writes it; ``shard`` = (index, count, owner, pinned, position)."""
    c: dict[str, Any] = {
        "name": name, "requests": requests, "status_counts": {"200": requests}, "errors": {}, "error_count": 0,
        "error_rate": 0.0, "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0}, "rps": 50.0,
        "histogram": f"HISTFAAA{name}", "slo": {"passed": outcome == "pass", "outcome": outcome, "checks": [],
                                                "failures": [] if outcome == "pass" else ["p99<1ms: 3ms"],
                                                "invalid": []},
    }
    if shard:
        i, n, owner, pinned, pos = shard
        c["shard"] = {"index": i, "count": n, "owner": owner, "pinned": pinned, "position": pos}
    if baseline:
        c["comparison"] = {"baseline": baseline, "confidence": 0.95,
                           "metrics": {"error_rate": {"verdict": "same"}}}
    return c


def run(results: list[dict[str, Any]], /, shard: tuple[int, int] | None = None, **settings: str) -> dict[str, Any]:
    values = {"duration": "1s", "json": "out.json", "cells": None, "shard": f"{shard[0]}/{shard[1]}" if shard
              else None, **settings}
    doc: dict[str, Any] = {
        "schema": 1, "created": 0.0, "cells": results,
        "environment": {"python": "3.12.3", "backend": "local", "git": {"commit": "abc"},
                        "machine": {"cores": 2, "arch": "x86_64", "kernel": "6.8"},
                        "versions": {"gunicorn": "23.0.0", "uwsgi": "2.0.28"},
                        "settings": {k: {"value": v, "source": "option"} for k, v in values.items()}},
    }
    if shard:
        doc["shard"] = {"index": shard[0], "count": shard[1]}
    return doc


def write(tmp: Path, name: str, doc: dict[str, Any]) -> Path:
    path = tmp / name
    path.write_text(json.dumps(doc))
    return path


def two_shards() -> list[tuple[str, dict[str, Any]]]:
    """base (shard 1) is the baseline of a and c (shard 2): pinned to shard 2, which ran it too."""
    one = run([cell("base", shard=(1, 2, 1, False, 0)), cell("b", shard=(1, 2, 1, False, 2))], (1, 2),
              json="s1.json")
    two = run([cell("base", shard=(2, 2, 1, True, 0), requests=99),
               cell("a", shard=(2, 2, 2, False, 1), baseline="base"),
               cell("c", shard=(2, 2, 2, False, 3), baseline="base")], (2, 2), json="s2.json")
    return [("s1.json", one), ("s2.json", two)]


def test_cells_are_concatenated_in_matrix_order_with_histograms_as_written() -> None:
    doc = merge.merge(two_shards())
    assert [c["name"] for c in doc["cells"]] == ["base", "a", "b", "c"]
    assert [c["histogram"] for c in doc["cells"]] == ["HISTFAAAbase", "HISTFAAAa", "HISTFAAAb", "HISTFAAAc"]
    assert doc["merge"]["runs"] == [{"file": "s1.json", "shard": "1/2", "cells": ["base", "b"]},
                                    {"file": "s2.json", "shard": "2/2", "cells": ["a", "c"]}]
    assert doc["merge"]["verdict"] == {"outcome": "pass", "counts": {"pass": 4, "fail": 0, "invalid": 0},
                                       "complete": True}
    assert "shard" not in doc["environment"]["settings"] and "cells" not in doc["environment"]["settings"]


def test_the_merged_machine_speed_covers_every_shards_cells() -> None:
    """environment.machine_speed is the spread of the merged cells' probes, as the merged table's footer reads
    them, not the first shard's (the rest of the environment is the first run's)."""
    runs = two_shards()
    for probes, (_, doc) in zip(([10.0, 11.0], [18.0, 12.0]), runs, strict=True):
        for c in doc["cells"]:
            c["machine_speed"] = {"probe_ms": probes}
    runs[0][1]["environment"]["machine_speed"] = {"min": 10.0, "max": 11.0}  # what shard 1 wrote of itself
    speed = merge.merge(runs)["environment"]["machine_speed"]
    assert (speed["min"], speed["max"]) == (10.0, 18.0)


def test_a_pinned_baseline_appears_once_from_the_shard_it_belongs_to() -> None:
    runs = two_shards()
    runs.reverse()  # the order of the files does not decide which run is kept
    doc = merge.merge(runs)
    base = [c for c in doc["cells"] if c["name"] == "base"]
    assert len(base) == 1 and base[0]["requests"] == 100 and base[0]["shard"]["pinned"] is False
    assert doc["merge"]["pinned"] == [{"cell": "base", "kept_from": "s1.json", "also_ran_in": ["s2.json"]}]
    assert "baseline base: kept from s1.json; its pinned runs in s2.json not kept" in merge.provenance(doc)


def test_a_comparison_with_the_baseline_row_from_another_shard_is_not_side_by_side() -> None:
    doc = merge.merge(two_shards())
    a = next(c for c in doc["cells"] if c["name"] == "a")
    assert a["comparison"]["side_by_side"] is False and a["comparison"]["baseline_run"] == "s2.json"
    table = "\n".join(render_table(doc["cells"]))
    assert "base: " in table and "(not side by side)" in table
    assert "not side by side: the cell and its baseline's row ran in different shards" in table


def test_a_comparison_in_the_baselines_own_shard_is_side_by_side() -> None:
    one = run([cell("base", shard=(1, 1, 1, False, 0)), cell("a", shard=(1, 1, 1, False, 1), baseline="base")],
              (1, 1))
    doc = merge.merge([("s.json", one)])
    assert doc["cells"][1]["comparison"]["side_by_side"] is True
    assert "not side by side" not in "\n".join(render_table(doc["cells"]))


def test_runs_whose_context_differs_are_refused_naming_the_keys() -> None:
    a, b = run([cell("a")], json="a.json"), run([cell("b")], json="b.json", duration="20s")
    b["environment"]["versions"]["gunicorn"] = "22.0.0"
    with pytest.raises(merge.MergeError) as exc:
        merge.merge([("x/a.json", a), ("x/b.json", b)])
    message = str(exc.value)
    assert message == ("runs differ in context, not merged: versions.gunicorn (a.json=23.0.0, b.json=22.0.0); "
                       "settings.duration (a.json=1s, b.json=20s) (merge runs of one matrix made with the same "
                       "versions and settings)")


def test_output_and_selection_settings_and_the_kernel_may_differ() -> None:
    a = run([cell("a")], json="a.json", html="a.html", cells="a")
    b = run([cell("b")], json="b.json", keep_dir="run-b", cells="b")
    b["environment"]["machine"]["kernel"] = "6.9"
    assert [c["name"] for c in merge.merge([("a", a), ("b", b)])["cells"]] == ["a", "b"]


def test_the_same_cell_in_two_runs_is_refused() -> None:
    with pytest.raises(merge.MergeError, match=r"^cell a ran in a.json and b.json: two runs of one cell are not "):
        merge.merge([("a.json", run([cell("a")])), ("b.json", run([cell("a")]))])


def test_shards_twice_mixed_or_of_different_splits_are_refused() -> None:
    runs = two_shards()
    with pytest.raises(merge.MergeError, match=r"^shard 1/2 given twice: s1.json and again.json$"):
        merge.merge([*runs, ("again.json", copy.deepcopy(runs[0][1]))])
    with pytest.raises(merge.MergeError, match=r"^plain\.json is not a shard"):
        merge.merge([runs[0], ("plain.json", run([cell("z")]))])
    three = run([cell("z", shard=(3, 3, 3, False, 0))], (3, 3))
    with pytest.raises(merge.MergeError, match=r"^shards of different splits, not merged: s1.json=1/2, t.json=3/3$"):
        merge.merge([runs[0], ("t.json", three)])


def test_a_missing_shard_makes_the_report_incomplete() -> None:
    doc = merge.merge([two_shards()[1]])
    assert doc["merge"]["missing_shards"] == ["1/2"]
    assert doc["merge"]["verdict"]["outcome"] == "invalid" and not doc["merge"]["verdict"]["complete"]
    base = next(c for c in doc["cells"] if c["name"] == "base")  # only its pinned run is left: kept, and said so
    assert base["requests"] == 99
    assert "its own shard 1/2 is missing" in doc["merge"]["pinned"][0]["note"]


def test_the_verdict_comes_from_the_cells_outcomes() -> None:
    assert merge.verdict([cell("a"), cell("b", outcome="invalid")])["outcome"] == "invalid"
    assert merge.verdict([cell("a"), cell("b", outcome="invalid"), cell("c", outcome="fail")]) == {
        "outcome": "fail", "counts": {"pass": 1, "fail": 1, "invalid": 1}, "complete": True}


def test_the_command_prints_the_table_writes_the_json_and_exits_by_the_verdict(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    files = [str(write(tmp_path, label, doc)) for label, doc in two_shards()]
    out = tmp_path / "merged.json"
    assert report_main(["merge", *files, f"--json={out}"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:3] == ["cell", "requests", "502"]
    assert "verdict: pass (4 pass, 0 fail, 0 invalid)" in text
    merged = json.loads(out.read_text())
    assert [c["name"] for c in merged["cells"]] == ["base", "a", "b", "c"]
    assert "| base |" in summary.read_text() and "- verdict: pass" in summary.read_text()
    failing = run([cell("f", outcome="fail")])
    assert report_main(["merge", str(write(tmp_path, "f.json", failing)), f"--json={out}"]) == 1


def test_the_command_refuses_in_one_line_with_exit_code_2(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.json", run([cell("a")]))
    b = write(tmp_path, "b.json", run([cell("b")], duration="2s"))
    assert report_main(["merge", str(a), str(b), f"--json={tmp_path / 'm.json'}"]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("merge: runs differ in context, not merged: settings.duration")
    assert not (tmp_path / "m.json").exists()
    (tmp_path / "bad.json").write_text("{")
    assert report_main(["merge", str(tmp_path / "bad.json"), f"--json={tmp_path / 'm.json'}"]) == 2
    assert capsys.readouterr().out.startswith(f"merge: {tmp_path / 'bad.json'}: not a readable JSON manifest")
    assert report_main(["nope"]) == 2


def test_the_merged_html_says_where_the_cells_ran(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from pytest_wsgi502.report.html import render_html

    page = render_html(merge.merge(two_shards()))
    assert "<section id='merge'>" in page and "shard 2/2: s2.json: a, c" in page
    assert "baseline base kept from s1.json, also ran in s2.json" in page and "(not side by side)" in page


def test_a_shard_that_owns_no_cell_is_not_missing() -> None:
    """Three shards of two cells: shard 3 runs nothing and writes no manifest; the cells' owner maps say so."""
    owners = {"a": 1, "b": 2}
    runs = []
    for i, name in ((1, "a"), (2, "b")):
        c = cell(name, shard=(i, 3, i, False, i - 1))
        c["shard"]["owners"] = owners
        runs.append((f"s{i}.json", run([c], (i, 3))))
    assert merge.merge(runs)["merge"]["missing_shards"] == []
    assert merge.merge(runs[:1])["merge"]["missing_shards"] == ["2/3"]


def test_shards_made_by_different_plugin_code_are_refused() -> None:
    """Seen on the seed matrix: shards 1-2 ran before a settings change, shard 3 after (no git checkout, the same
    package version): the plugin's source digest tells them apart."""
    a, b = run([cell("a")], json="a.json"), run([cell("b")], json="b.json")
    a["environment"]["plugin_digest"], b["environment"]["plugin_digest"] = "1111", "2222"
    with pytest.raises(merge.MergeError, match=r"^runs differ in context, not merged: plugin_digest \(a.json=1111, "
                                               r"b.json=2222\)"):
        merge.merge([("a.json", a), ("b.json", b)])
    b["environment"]["plugin_digest"] = "1111"
    assert [c["name"] for c in merge.merge([("a.json", a), ("b.json", b)])["cells"]] == ["a", "b"]


def test_the_manifest_records_the_plugin_digest_of_its_source() -> None:
    from pytest_wsgi502.report import manifest

    digest = manifest.plugin_digest()
    assert len(digest) == 16 and int(digest, 16) >= 0 and manifest.plugin_digest() == digest  # stable
    from pytest_wsgi502.config.settings import resolve

    assert manifest.environment(resolve({}, {}, {}), Path.cwd())["plugin_digest"] == digest
