"""What an installed program says about itself (``nginx -v``, ``uwsgi --version``): run once per binary, cached."""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path


@functools.lru_cache(maxsize=8)
def program_version(binary: str) -> str | None:
    """``nginx -v`` / ``uwsgi --version`` style version of a program (None when it cannot say)."""
    flag = "-v" if Path(binary).name.startswith("nginx") else "--version"
    try:
        out = subprocess.run([binary, flag], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"\d+\.\d+(?:\.\d+){0,2}", out.stdout + out.stderr)  # 1.22.1, 2.0.25.1
    return m.group(0) if m else None
