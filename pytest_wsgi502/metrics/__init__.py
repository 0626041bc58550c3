"""Metrics: the registry of metric names (``registry``, stdlib only) and mergeable load statistics (``stats``)."""
