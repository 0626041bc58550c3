"""A pytester project that runs real cells of the sample app (real MariaDB, servers, nginx): the ini of
sample_project/pytest.ini with its directory made absolute, and a small matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "sample_project"

INI = f"""\
[pytest]
wsgi_app = sampleapp.wsgi:application
wsgi_chdir = {SAMPLE}
wsgi_setup_command = python manage.py migrate --noinput
wsgi_path = /api/counter/{{n}}
wsgi_verify_contains = "id": {{n}},
wsgi_duration = 1s
wsgi_matrix_file = matrix.toml
"""

MATRIX = """\
[cells.uwsgi-2w]
server = "uwsgi"
workers = 2
[cells.gunicorn-2w]
server = "gunicorn"
workers = 2
"""


@pytest.fixture
def real_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makefile(".toml", matrix=MATRIX)
    return pytester
