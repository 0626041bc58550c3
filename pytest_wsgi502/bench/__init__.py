"""Side-by-side benchmarks of the load engine: ``python -m pytest_wsgi502.bench {engine,accuracy} --json PATH``."""
