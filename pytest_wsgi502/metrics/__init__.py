"""Mergeable load statistics (pure)."""

from pytest_wsgi502.metrics.stats import ERROR_CLASSES, Stats

__all__ = ["ERROR_CLASSES", "Stats"]
