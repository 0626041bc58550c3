"""One rule for when services and load run (issue 15 items 4 and 9): a test that uses ``wsgi_server`` /
``wsgi_load`` (or another fixture that starts services), directly or through a fixture of its own, runs only
with --wsgi-matrix, like matrix cells, with no marker or skipif in the test. A plain run prints no wsgi502 header.

pytester, nothing started: the conftest stands in for the heavy fixtures (a test that reached one of them fails
with "started"), so on the old code, which ran these tests without --wsgi-matrix, they fail instead of skipping.
"""

from __future__ import annotations

import pytest

CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def wsgi_isolation():
    pytest.fail("started: wsgi_isolation (CPU isolation) without --wsgi-matrix")

@pytest.fixture(scope="session")
def wsgi_mysql(wsgi_isolation):
    pytest.fail("started: MariaDB without --wsgi-matrix")

@pytest.fixture
def my_site(wsgi_server):  # the user's own fixture on top of ours
    return wsgi_server
"""

TESTS = """
def test_direct(wsgi_server, wsgi_load):
    target = wsgi_server({"server": "gunicorn", "workers": 2})
    wsgi_load(target, duration=1)

def test_only_load(wsgi_load):
    assert callable(wsgi_load)

def test_through_a_fixture(my_site):
    my_site({"server": "uwsgi"})

def test_database(wsgi_database):
    pass

def test_plain():
    pass

def test_settings_only(wsgi_settings):  # reading settings starts nothing
    assert wsgi_settings.duration
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_site=TESTS)
    return pytester


def test_service_tests_are_skipped_without_the_flag_with_a_reason(project: pytest.Pytester) -> None:
    r = project.runpytest("-rs", "-p", "no:cacheprovider")
    out = r.stdout.str()
    r.assert_outcomes(passed=2, skipped=4)
    assert "started:" not in out
    r.stdout.fnmatch_lines([  # the fixture each test uses, also through the user's own fixture (my_site)
        "SKIPPED [[]2[]] test_site.py: uses wsgi_server, which starts services and load: like matrix cells, it runs "
        "only with --wsgi-matrix",
        "SKIPPED [[]1[]] test_site.py: uses wsgi_load, *only with --wsgi-matrix",
        "SKIPPED [[]1[]] test_site.py: uses wsgi_database, *only with --wsgi-matrix",
    ])


def test_the_summary_hints_at_the_flag_and_the_header_stays_quiet(project: pytest.Pytester) -> None:
    """The hint is in the summary when tests were skipped for it, not a header line on every run."""
    r = project.runpytest("-p", "no:cacheprovider")
    lines = r.stdout.lines
    assert not [line for line in lines if line.startswith("wsgi502:") and "skipped" not in line], lines
    r.stdout.fnmatch_lines(
        ["wsgi502: matrix off: 4 tests that start servers and load skipped (pass --wsgi-matrix to run them)"])


def test_the_rule_marks_them_wsgi_matrix_so_m_selects_them(project: pytest.Pytester) -> None:
    r = project.runpytest("-m", "not wsgi_matrix", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=2, deselected=4)
    r = project.runpytest("-m", "wsgi_matrix", "-p", "no:cacheprovider")
    r.assert_outcomes(skipped=4, deselected=2)


def test_with_the_flag_they_run(project: pytest.Pytester) -> None:
    """--wsgi-matrix lifts the rule: the tests reach the (stand-in) services. Collected only: nothing starts."""
    r = project.runpytest("--wsgi-matrix", "-p", "no:cacheprovider", "-k", "database or plain")
    r.assert_outcomes(passed=1, errors=1)
    r.stdout.fnmatch_lines(["*started: wsgi_isolation (CPU isolation) without --wsgi-matrix*"])


def test_matrix_cells_keep_their_reason_and_count_in_the_hint(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_cells="def test_cell(wsgi_cell_run):\n    pass\n")
    r = pytester.runpytest("-rs", "-p", "no:cacheprovider", "--wsgi-cells=uwsgi-2w,gunicorn-sync")
    r.assert_outcomes(skipped=2)
    r.stdout.fnmatch_lines(["wsgi502: matrix off: 2 tests that start servers and load skipped*",
                            "SKIPPED [[]2[]] *matrix cells run only with --wsgi-matrix"])


def test_the_hint_counts_skips_from_xdist_workers(project: pytest.Pytester) -> None:
    """Under -n the controller does not collect: the count comes from the workers' reports."""
    pytest.importorskip("xdist")
    r = project.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", timeout=120)
    r.assert_outcomes(passed=2, skipped=4)
    r.stdout.fnmatch_lines(["wsgi502: matrix off: 4 tests that start servers and load skipped*"])


def test_a_plain_run_prints_no_wsgi502_header(pytester: pytest.Pytester) -> None:
    """Every project with the plugin installed ran with 'wsgi502: matrix off (pass --wsgi-matrix to run it)'."""
    pytester.makeini("[pytest]\nwsgi_app = mysite.wsgi:application\n")  # configured, but not asked to run
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1)
    assert not [line for line in r.stdout.lines if line.startswith("wsgi502")], r.stdout.str()


def test_a_wsgi_option_without_the_flag_says_why_nothing_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    r = pytester.runpytest("--wsgi-duration=2s", "--wsgi-rate=50", "-p", "no:cacheprovider")
    r.stdout.fnmatch_lines(["wsgi502: matrix off (pass --wsgi-matrix to run it; given: --wsgi-duration, --wsgi-rate)"])
