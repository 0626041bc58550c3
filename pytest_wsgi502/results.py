"""What a cell run gives the test (``Result``, ``CellRun``), how each result travels to the reporter (the
``pytest_wsgi502_cell_result`` hook, the test item's stash, which the test report carries, also across xdist, and
JUnit XML properties), and the reporter that turns them into the table, JSON, HTML and saved runs.

Glue (pytest lives here); cheap to import: pytest, the pure core and state.py at import, reports when used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_wsgi502.config.matrix import Cell
from pytest_wsgi502.state import MATRIX_ONLY, REPORT_ATTR, RESULTS, State


class Result(dict[str, Any]):
    """A cell's result: the JSON contract as a dict, its top-level keys also as attributes
    (``result.error_rate``, ``result.latency_ms["p99"]``, ``result.slo["failures"]``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def passed(self) -> bool:
        return bool(self["slo"]["passed"])

    @property
    def outcome(self) -> str:
        """``pass``, ``fail`` (an SLO breached) or ``invalid`` (the run says nothing about the server)."""
        return str(self["slo"].get("outcome") or ("pass" if self.passed else "fail"))

    def assert_slo(self) -> None:
        """Fail the test with one line per breached SLO: the SLO, the measured value, the limit; an invalid run
        fails with the reasons it is invalid."""
        if not self.passed:
            lines = "\n".join("  " + f for f in self["slo"]["failures"])
            what = "invalid run" if self.outcome == "invalid" else "SLO breached"
            pytest.fail(f"cell {self['name']}: {what}\n{lines}", pytrace=False)


@dataclass
class CellRun:
    """What ``wsgi_cell_run`` returns: the cell and its ``Result`` (also written by --wsgi-json)."""

    cell: Cell
    result: Result

    @property
    def passed(self) -> bool:
        return self.result.passed

    def assert_slo(self) -> None:
        self.result.assert_slo()


def record(request: pytest.FixtureRequest, result: Result) -> None:
    """A finished result: first to the ``pytest_wsgi502_cell_result`` hook (on the process that ran the cell; a
    hook may add keys), then to the reporter (via the test's report) and as JUnit XML properties
    (``record_property``): ``wsgi502.<cell>.<metric>`` and ``wsgi502.<cell>.slo.<slo>``."""
    request.config.hook.pytest_wsgi502_cell_result(result=result, config=request.config)
    request.node.stash.setdefault(RESULTS, []).append(dict(result))
    for name, value in junit_properties(result):
        request.node.user_properties.append((name, value))


def junit_properties(result: dict[str, Any]) -> list[tuple[str, str]]:
    prefix = f"wsgi502.{result['name']}"
    lat = result.get("latency_ms") or {}
    props = [(f"{prefix}.{k}", str(v)) for k, v in (
        ("requests", result.get("requests")), ("error_rate", result.get("error_rate")),
        ("http_502", (result.get("status_counts") or {}).get("502", 0)), ("p50_ms", lat.get("p50")),
        ("p99_ms", lat.get("p99")), ("rps", result.get("rps")), ("respawns", result.get("respawns")),
        ("kills", result.get("kills")))]
    for check in result["slo"]["checks"]:
        measured = "not measured" if check["value"] is None else f"{check['value']:.6g}"
        props.append((f"{prefix}.slo.{check['slo']}",
                      f"{'pass' if check['passed'] else 'FAIL'} (measured {measured})"))
    props.append((f"{prefix}.slo", "pass" if result["slo"]["passed"] else "FAIL"))
    return props


class MatrixReporter:
    """Collects each cell's result from its test report, and on the controller only: prints the table and the
    comparison, writes JSON / HTML / PNG / GitHub step summary, saves the run, fails the session on regression."""

    def __init__(self, config: pytest.Config, state: State) -> None:
        self.config, self.state = config, state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.state.results.extend(dict(r) for r in getattr(report, REPORT_ATTR, None) or ())
        elif report.when == "setup" and report.skipped and _skipped_for_matrix(report):
            self.state.skipped += 1

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state, s = self.state, self.state.settings
        if hasattr(self.config, "workerinput") or not state.results:
            return
        from pytest_wsgi502.report import compare, manifest  # both stdlib-only at import

        doc = manifest.build(state.results, s, state.rootdir)
        from pytest_wsgi502.report.table import lint_summary

        doc["lint"] = lint_summary(state.results)  # each finding once with its cells (each cell keeps its own)
        if s.compare or s.compare_fail:
            store = compare.storage(state.path("storage"))
            path = compare.find_run(store, s.compare or "latest")
            saved_doc, saved = compare.load(path)
            result = compare.compare(state.results, saved, s.compare_fail or ())
            commit = ((saved_doc.get("commit_info") or {}).get("id") or "")[:12]
            label = f"{path.stem} ({saved_doc.get('datetime', '?')[:19]}, commit {commit or '?'})"
            state.compare = {**result, "lines": compare.render(result, label)}
            doc["compare"] = {"against": str(path), "checks": [c.text for c in s.compare_fail or ()],
                              "rows": result["rows"], "failures": result["failures"]}
            if result["failures"] and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if s.save:
            saved_path = compare.save(compare.storage(state.path("storage")), s.save, state.results,
                                      doc["environment"])
            state.written.append(f"run saved as {saved_path}")
        if s.json:
            manifest.write_json(state.path("json"), doc)
            state.written.append(f"results written to {state.path('json')}")
        if s.html or s.png:
            from pytest_wsgi502.report import html

            if s.html:
                state.written.append(f"HTML report: {html.write_html(doc, state.path('html'))}")
            if s.png:
                pngs = html.write_png(doc, state.path("png"))
                state.written.append(f"{len(pngs)} PNG charts in {state.path('png')}")
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            from pytest_wsgi502.report.table import render_markdown

            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(render_markdown(state.results, (state.compare or {}).get("lines", ())))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        state = self.state
        if state.skipped and not state.enabled:  # the hint the header no longer gives on every plain run
            tests = "test" if state.skipped == 1 else "tests"
            terminalreporter.write_line(f"wsgi502: matrix off: {state.skipped} {tests} that start servers and load "
                                        "skipped (pass --wsgi-matrix to run them)")
        if not state.results:
            return
        from pytest_wsgi502.report.table import render_lint, render_table

        terminalreporter.section("wsgi502 matrix")
        for line in render_table(state.results):
            terminalreporter.write_line(line)
        lint = render_lint(state.results)
        if lint:  # once per finding, not a Python warning per cell (the JSON keeps them per cell under "lint")
            terminalreporter.section("wsgi502 config lint")
            for line in lint:
                terminalreporter.write_line(line, yellow=True)
        splits: list[dict[str, Any]] = []
        for r in state.results:
            if r.get("isolation") and r["isolation"] not in splits:
                splits.append(r["isolation"])
        if len(splits) > 1 or any(s.get("worker", "main") != "main" for s in splits):  # xdist: what each got
            from pytest_wsgi502.services.isolation import describe_text

            for split in splits:
                terminalreporter.write_line(f"wsgi502: isolation {split.get('worker', 'main')}: "
                                            f"{describe_text(split)}")
        if state.compare is not None:
            terminalreporter.section("wsgi502 compare")
            for line in state.compare["lines"]:
                terminalreporter.write_line(line, red=line.startswith("regression"))
        for line in state.written:
            terminalreporter.write_line(f"wsgi502: {line}")


def _skipped_for_matrix(report: pytest.TestReport) -> bool:
    """A skip made by the --wsgi-matrix rule (its reason ends with MATRIX_ONLY). A skip's ``longrepr`` is
    (path, line, "Skipped: reason"); from an xdist worker it may arrive as a list."""
    longrepr = report.longrepr
    return isinstance(longrepr, tuple | list) and len(longrepr) == 3 and str(longrepr[2]).endswith(MATRIX_ONLY)
