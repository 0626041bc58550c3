"""Settings for the pytest-wsgi502 sample app.

Everything that varies per test cell comes from WSGI502_* environment
variables; each has a default so ``manage.py`` works out of the box.
"""

import os

from django.core.exceptions import ImproperlyConfigured

DRIVERS = ("mysqlclient", "pymysql")
POOLS = ("none", "sqlalchemy")


def env(name, default):
    return os.environ.get(f"WSGI502_{name}", default)


def env_int(name, default):
    value = env(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"WSGI502_{name}={value!r} is not an integer") from None


def env_choice(name, default, allowed):
    value = env(name, default)
    if value not in allowed:
        raise ImproperlyConfigured(f"WSGI502_{name}={value!r} is invalid; allowed: {', '.join(allowed)}")
    return value


DB_DRIVER = env_choice("DB_DRIVER", "mysqlclient", DRIVERS)
DB_POOL = env_choice("DB_POOL", "none", POOLS)

if DB_DRIVER == "pymysql":
    import pymysql

    # Must run before django.db.backends.mysql imports MySQLdb. PyMySQL
    # advertises a mysqlclient-compatible version_info (2.2.x), which passes
    # Django 5.2's ">= 1.4.3" check, so no version patching is needed.
    pymysql.install_as_MySQLdb()

SECRET_KEY = env("SECRET_KEY", "dev-insecure-sample-project-key-do-not-use-in-production")
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = ["sampleapp"]
# none: responses carry no Content-Length, so a proxy cannot keep the upstream connection alive.
# common: Django's CommonMiddleware, as in most real projects, sets Content-Length: keep-alive to the backend
# becomes possible, and with it the keep-alive race against servers that close silently (uWSGI http-socket).
MIDDLEWARE: list[str] = {
    "none": [],
    "common": ["django.middleware.common.CommonMiddleware"],
}[env_choice("MIDDLEWARE", "none", ("none", "common"))]
ROOT_URLCONF = "sampleapp.urls"
WSGI_APPLICATION = "sampleapp.wsgi.application"

USE_TZ = True
TIME_ZONE = "UTC"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.mysql",
        "HOST": env("DB_HOST", "127.0.0.1"),
        "PORT": env_int("DB_PORT", 3306),
        "NAME": env("DB_NAME", "wsgi502"),
        "USER": env("DB_USER", "wsgi502"),
        "PASSWORD": env("DB_PASSWORD", "wsgi502"),
        "CONN_MAX_AGE": env_int("CONN_MAX_AGE", 0),
        "ATOMIC_REQUESTS": False,
        "OPTIONS": {"charset": "utf8mb4"},
    }
}

if DB_POOL == "sqlalchemy":
    # django-db-connection-pool: Django's close() hands the connection back to
    # a per-process SQLAlchemy QueuePool instead of closing it.
    DATABASES["default"]["ENGINE"] = "dj_db_conn_pool.backends.mysql"
    DATABASES["default"]["POOL_OPTIONS"] = {
        "POOL_SIZE": env_int("DB_POOL_SIZE", 5),
        "MAX_OVERFLOW": env_int("DB_MAX_OVERFLOW", 10),
        "RECYCLE": 3600,
    }

# With DEBUG off Django only mails request errors to ADMINS; send them (with
# the traceback) to stderr so a 500 shows up in the WSGI server's log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {
            "handlers": ["stderr"],
            "level": "ERROR",
            "propagate": False,
        },
    },
}
