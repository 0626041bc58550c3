"""Services a cell needs (database, WSGI server, proxy) and the process machinery that owns them."""

from pytest_wsgi502.services.process import ServiceError

__all__ = ["ServiceError"]
