"""FastTransport against real in-process servers on 127.0.0.1 (no external processes)."""

import asyncio

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
