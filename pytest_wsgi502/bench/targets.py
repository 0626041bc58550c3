"""Tiny HTTP/1.1 keep-alive targets with known behaviour, for the accuracy benchmark and tests.

    python -m pytest_wsgi502.bench.targets delay --ms 50 --port P       every response after exactly 50 ms
    python -m pytest_wsgi502.bench.targets stall --every 5 --stall 1 --port P
                                                   immediate, except that for 1 s out of every 5 s nothing
                                                   is answered (answers resume when the stall ends)

Timers (uvloop's tick in whole milliseconds) wake 2 ms early; the answer then yields to the loop until due.
Prints "ready <port>" on stdout once listening on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class _Target(asyncio.Protocol):
    def __init__(self, delay: float, every: float, stall: float, t0: float) -> None:
        self.delay, self.every, self.stall, self.t0 = delay, every, stall, t0
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        loop = asyncio.get_running_loop()
        while (i := self.buf.find(b"\r\n\r\n")) >= 0:
            self.buf = self.buf[i + 4:]
            wait = self.delay
            if self.every:
                phase = (time.monotonic() - self.t0) % self.every
                if phase >= self.every - self.stall:  # inside a stall window: answer when it ends
                    wait = self.every - phase
            due = time.monotonic() + wait
            if wait > 0.003:  # epoll waits whole milliseconds (and may be late): wake 2 ms early, spin to due
                loop.call_later(wait - 0.002, self._answer, due)
            else:
                self._answer(due)

    def _answer(self, due: float) -> None:
        if time.monotonic() < due:  # yield-spin: re-queue, so arrivals are still read while we wait
            asyncio.get_running_loop().call_soon(self._answer, due)
            return
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)


async def serve(kind: str, port: int, ms: float, every: float, stall: float) -> None:
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    delay = ms / 1000 if kind == "delay" else 0.0
    server = await loop.create_server(lambda: _Target(delay, every if kind == "stall" else 0, stall, t0),
                                      "127.0.0.1", port, backlog=1024)
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pytest_wsgi502.bench.targets")
    p.add_argument("kind", choices=("delay", "stall", "fast"))
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ms", type=float, default=50.0)
    p.add_argument("--every", type=float, default=5.0)
    p.add_argument("--stall", type=float, default=1.0)
    p.add_argument("--cpu", type=int, default=-1, help="pin to this CPU (-1: no pinning)")
    a = p.parse_args(argv)
    if a.cpu >= 0:
        os.sched_setaffinity(0, {a.cpu})
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(a.kind, a.port, a.ms, a.every, a.stall))


if __name__ == "__main__":
    main()
