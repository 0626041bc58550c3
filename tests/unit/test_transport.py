"""FastTransport against real in-process servers on 127.0.0.1 (no external processes)."""

import asyncio
import socket
import struct

import httpx
import pytest

from pytest_wsgi502.load.transport import FastTransport

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"


def run(coro):
    return asyncio.run(coro)


def test_keep_alive_reuses_one_connection():
    async def main():
        conns = []

        async def handler(reader, writer):
            conns.append(1)
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(OK)
                await writer.drain()

        server, url = await serve(handler)
        t = FastTransport()
        req = httpx.Request("GET", url)
        bodies = [(await t.handle_async_request(req)).content for _ in range(5)]
        await t.aclose()
        server.close()
        return bodies, len(conns)

    bodies, conns = run(main())
    assert bodies == [b"ok"] * 5 and conns == 1


def test_connection_close_reconnects():
    async def main():
        conns = []

        async def handler(reader, writer):
            conns.append(1)
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nk")
            await writer.drain()
            writer.close()

        server, url = await serve(handler)
        t = FastTransport()
        req = httpx.Request("GET", url)
        codes = [(await t.handle_async_request(req)).status_code for _ in range(3)]
        server.close()
        return codes, len(conns)

    assert run(main()) == ([200, 200, 200], 3)


@pytest.mark.parametrize(
    ("behaviour", "exc"),
    [
        ("close", httpx.ReadError),
        ("reset", httpx.ReadError),
        ("junk", httpx.RemoteProtocolError),
        ("hang", httpx.ReadTimeout),
    ],
)
def test_failures_raise_httpx_exceptions(behaviour, exc):
    async def main():
        async def handler(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            if behaviour == "close":
                writer.close()
            elif behaviour == "reset":
                writer.transport.abort()
            elif behaviour == "junk":
                writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            else:
                await asyncio.sleep(5)

        server, url = await serve(handler)
        t = FastTransport(timeout=0.3)
        try:
            with pytest.raises(exc):
                await t.handle_async_request(httpx.Request("GET", url))
        finally:
            server.close()

    run(main())


def test_refused_is_connect_error():
    async def main():
        server, url = await serve(lambda r, w: None)
        server.close()
        await server.wait_closed()
        with pytest.raises(httpx.ConnectError):
            await FastTransport().handle_async_request(httpx.Request("GET", url))

    run(main())


def test_request_bytes_are_built_once_and_carry_headers():
    from pytest_wsgi502.load.transport import serialize

    req = httpx.Request("GET", "http://127.0.0.1:1/a/b?c=1", headers={"X-Test": "1"})
    raw = serialize(req)
    assert raw.startswith(b"GET /a/b?c=1 HTTP/1.1\r\n") and b"X-Test: 1\r\n" in raw.replace(b"x-test", b"X-Test")
    assert raw.endswith(b"\r\n\r\n")
    assert serialize(req) is raw


@pytest.mark.parametrize(("answer", "abort", "want"), [
    # no Content-Length, no chunking: the body ends with the connection (uWSGI's http-socket when the app sets no
    # length; HAProxy passes it on as is, nginx re-frames it). Session 9: every such response through HAProxy
    # was counted as a reset.
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world", False, (200, b"hello world")),
    (b"HTTP/1.0 200 OK\r\n\r\nold", False, (200, b"old")),
    # a length that the close cuts short, or a reset, is still a failure
    (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", False, httpx.ReadError),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", False, httpx.ReadError),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", True, httpx.ReadError),
])
def test_a_close_delimited_body_is_a_response(answer, abort, want):
    async def main():
        async def handler(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            await asyncio.sleep(0.05)
            if abort:  # a real reset: SO_LINGER 0 (abort() alone sends a FIN when nothing is unread)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()

        server, url = await serve(handler)
        t = FastTransport(timeout=2)
        try:
            if isinstance(want, tuple):
                r = await t.handle_async_request(httpx.Request("GET", url))
                assert (r.status_code, r.content) == want
                r = await t.handle_async_request(httpx.Request("GET", url))  # and the next one reconnects
                assert (r.status_code, r.content) == want
            else:
                with pytest.raises(want):
                    await t.handle_async_request(httpx.Request("GET", url))
        finally:
            await t.aclose()
            server.close()

    run(main())
