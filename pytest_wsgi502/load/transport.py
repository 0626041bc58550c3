"""A small, fast httpx transport: one keep-alive HTTP/1.1 connection, parsed by httptools.

httpx's default transport costs ~1.8 ms of CPU per request at 32 connections (its pool polls every socket
per request), so a default ``httpx.AsyncClient`` barely outruns 2 uWSGI workers. This transport keeps the
httpx API (``handle_async_request(httpx.Request) -> httpx.Response``) and does the minimum: the request
bytes are serialized once per ``httpx.Request`` object and reused, and one connection serves one virtual user,
so there is no pool to search. Failures are raised as the httpx exception a user would expect.

Pinned target: the engine builds the transport with ``addresses`` (the base URL's host, resolved once and checked
to be loopback) and ``port``. It then connects only there, whatever the ``httpx.Request`` URL says: no second name
lookup (no check-then-resolve race) and no request URL can move the load to another host. The Host header is the
request's own (the original name). Without ``addresses`` (standalone use) it connects to the request URL's host.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence

import httptools
import httpx

_RAW = "wsgi502.raw"


def serialize(request: httpx.Request) -> bytes:
    """The request's wire bytes, cached on the request (templates are reused for many sends)."""
    raw = request.extensions.get(_RAW)
    if raw is None:
        body = request.content if request.method not in ("GET", "HEAD") else b""
        lines = [f"{request.method} ".encode() + request.url.raw_path + b" HTTP/1.1"]
        lines += [k + b": " + v for k, v in request.headers.raw]
        raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
        request.extensions[_RAW] = raw
    return raw


class _Protocol(asyncio.Protocol):
    __slots__ = ("_body", "_headers", "_headers_done", "_parser", "_timer", "closed", "keep_alive", "transport",
                 "waiter")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self.closed = False
        self.keep_alive = True
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._timer: asyncio.TimerHandle | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is None and self._headers_done and self.waiter is not None and self._close_delimited():
            # a body without Content-Length or chunked encoding ends where the connection does (RFC 9112 6.3,
            # point 8): uWSGI's http-socket answers so when the app sets no length; nginx re-frames such a
            # response, HAProxy passes it on (httptools has no "finish" to say the EOF ended the message)
            self.on_message_complete()
            self.keep_alive = False
            return
        if isinstance(exc, ConnectionResetError) or (isinstance(exc, OSError) and exc.errno == errno.ECONNRESET):
            self._fail(httpx.ReadError("connection reset by peer"))
        else:
            self._fail(httpx.ReadError("connection closed by peer before a complete response"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def _close_delimited(self) -> bool:
        return not any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self._headers)

    def on_message_complete(self) -> None:
        self._headers_done = False
        self.keep_alive = self._parser.should_keep_alive()
        status = self._parser.get_status_code()
        waiter, headers, body = self.waiter, self._headers, b"".join(self._body)
        self._headers, self._body, self.waiter = [], [], None
        self._cancel_timer()
        if waiter is not None and not waiter.done():
            waiter.set_result((status, headers, body))

    # ours
    def send(self, data: bytes, timeout: float) -> asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]]:
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self._timer = loop.call_later(timeout, self._on_timeout)
        assert self.transport is not None
        self.transport.write(data)
        return self.waiter

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(httpx.ReadTimeout("no complete response before the timeout"))
        self.abort()

    def _fail(self, exc: Exception) -> None:
        self._cancel_timer()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class FastTransport(httpx.AsyncBaseTransport):
    """One connection, reopened when the server closes it. Not shared between concurrent tasks."""

    def __init__(self, timeout: float = 60.0, connect_timeout: float = 10.0, addresses: Sequence[str] = (),
                 port: int = 0) -> None:
        """``addresses`` and ``port`` pin where every connection goes (IP literals, tried in order; the one that
        answered is tried first next time). Empty: the request URL's host and port."""
        if addresses and not 0 < port < 65536:
            raise ValueError(f"a pinned FastTransport needs a port in 1..65535, got {port!r}")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.addresses = list(addresses)
        self.port = port
        self._proto: _Protocol | None = None

    async def _connect(self, url: httpx.URL) -> _Protocol:
        if not self.addresses:
            return await self._open(url.host, url.port or 80)
        error: httpx.TransportError | None = None
        for ip in list(self.addresses):
            try:
                proto = await self._open(ip, self.port)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error = exc
                continue
            if ip != self.addresses[0]:  # remember the address that answers (e.g. 127.0.0.1 of localhost)
                self.addresses.remove(ip)
                self.addresses.insert(0, ip)
            return proto
        assert error is not None
        raise error

    async def _open(self, host: str, port: int) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(loop.create_connection(_Protocol, host, port), self.connect_timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"connect to {host}:{port}: {exc.strerror or exc}") from None
        return proto

    async def roundtrip(self, request: httpx.Request, raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The engine's hot path: pre-serialized bytes in, (status, headers, body) out, no httpx.Response."""
        proto = self._proto
        if proto is None or proto.closed:
            proto = self._proto = await self._connect(request.url)
        result = await proto.send(raw, self.timeout)
        if not proto.keep_alive:
            proto.abort()
        return result

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        status, headers, body = await self.roundtrip(request, serialize(request))
        return httpx.Response(status, headers=headers, content=body, request=request)

    async def aclose(self) -> None:
        if self._proto is not None:
            self._proto.abort()
            self._proto = None
