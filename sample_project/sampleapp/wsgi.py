"""WSGI entry point: ``sampleapp.wsgi:application``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sampleapp.settings")

application = get_wsgi_application()


def _preload_db_backend():
    # Django imports the DB backend on first use; for the SQLAlchemy pool that
    # is ~130 ms of imports, which would otherwise land on each worker's first
    # request. Importing it here moves that cost to app load (no connection
    # is opened, so this stays fork-safe).
    from django.conf import settings
    from django.db.utils import load_backend

    load_backend(settings.DATABASES["default"]["ENGINE"])


_preload_db_backend()
