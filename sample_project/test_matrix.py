"""The seed matrix against the sample app: one test per cell (`pytest --wsgi-matrix -k uwsgi-2w`)."""


def test_cell(wsgi_cell_run):
    wsgi_cell_run.assert_slo()
