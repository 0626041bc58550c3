"""A fake loopback wire for the load engine's transport: tests that must see every connect and request head
without any socket (nothing can leave the machine). Used by tests/unit/test_load_guard.py and
tests/plugin/test_target.py."""

from __future__ import annotations

import asyncio
from typing import Any


class FakeWire(asyncio.Transport):
    """A connection that answers every complete request with 200 and appends each request head to
    ``net.requests``."""

    def __init__(self, net: Any, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.net, self.protocol, self.closed, self.buffer = net, protocol, False, b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer += bytes(data)
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.net.requests.append(head)
            asyncio.get_running_loop().call_soon(
                self.protocol.data_received, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
