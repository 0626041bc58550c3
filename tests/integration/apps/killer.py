"""A plain WSGI app (no Django, no database) with a fault view for the end-of-load attribution test.

``/`` answers ``ok`` and remembers when the load began (the first request it saw). ``/kill`` SIGKILLs its own
worker once, on its first request at or after ``KILL_AFTER`` seconds from that moment, and tallies the kill on
disk first: the ground truth the harness's counts are checked against.
"""

import os
import signal
import time
from pathlib import Path

TALLY = Path(os.environ.get("KILLER_TALLY", "tally"))
KILL_AFTER = float(os.environ.get("KILLER_KILL_AFTER", "3.7"))


def _once(name: str, text: str) -> bool:
    try:
        fd = os.open(TALLY / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.write(fd, text.encode())
    os.close(fd)
    return True


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"up"]
    now = time.time()
    _once("began", f"{now:.6f}")
    if path == "/kill":
        began = float((TALLY / "began").read_text() or now)
        if now - began >= KILL_AFTER and _once("killed", f"{os.getpid()} {now:.6f}"):
            os.kill(os.getpid(), signal.SIGKILL)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
