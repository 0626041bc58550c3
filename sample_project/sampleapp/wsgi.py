"""WSGI entry point: ``sampleapp.wsgi:application``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sampleapp.settings")

application = get_wsgi_application()


def _app_load_time():
    # Opt-in (WSGI502_APP_LOAD_MS): the app takes this long to load, like a larger project's imports and warm-up
    # (this sample loads in ~0.15 s, a real Django project often in 1-3 s). Each worker pays it when it imports
    # the app itself (uWSGI lazy-apps, gunicorn without --preload), e.g. after every recycle.
    import time

    time.sleep(int(os.environ.get("WSGI502_APP_LOAD_MS", "0")) / 1000)


_app_load_time()


def _background_thread():
    # Opt-in (WSGI502_BG_THREAD): a thread started at import, like a metrics or log shipper. Non-daemon, it keeps
    # a recycling worker from finishing Python's shutdown when the app was imported before the fork (uWSGI's
    # default): the master then SIGKILLs the worker after worker-reload-mercy ("NO MERCY").
    import threading
    import time

    kind = os.environ.get("WSGI502_BG_THREAD", "none")
    if kind in ("daemon", "nondaemon"):
        threading.Thread(target=time.sleep, args=(3600,), daemon=kind == "daemon", name="shipper").start()


_background_thread()


def _preload_db_backend():
    # Django imports the DB backend on first use; for the SQLAlchemy pool that
    # is ~130 ms of imports, which would otherwise land on each worker's first
    # request. Importing it here moves that cost to app load (no connection
    # is opened, so this stays fork-safe).
    from django.conf import settings
    from django.db.utils import load_backend

    load_backend(settings.DATABASES["default"]["ENGINE"])


_preload_db_backend()
