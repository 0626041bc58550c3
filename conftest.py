"""Top-level conftest: the plugin tests drive pytest itself through pytester."""

pytest_plugins = ["pytester"]
