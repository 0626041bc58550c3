"""A loopback HTTP/1.1 target for the proxy tests (the nginx ALB profile and HAProxy): ``/ok`` answers 200
(keep-alive) with the target's name as its body, ``/close`` closes without an answer, ``/reset`` resets
(SO_LINGER 0), ``/slow?s=N`` answers after N s. Counts the requests it read per path. ``stop()`` closes the
listener and every connection, like a server process exiting."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter


class Target:
    def __init__(self, name: str = "ok", port: int = 0) -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a successor binds its predecessor's port
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.seen: Counter[str] = Counter()
        self.conns: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return conn.close()
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode()
                self.seen[path.split("?")[0]] += 1
                if path == "/close":
                    return conn.close()
                if path == "/reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return conn.close()
                if path.startswith("/slow?s="):
                    time.sleep(float(path.split("=")[1]))
                body = self.name.encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            return

    def stop(self) -> None:
        # shutdown() wakes a thread blocked in accept()/recv(); close() alone leaves the listener listening
        for s in (self.sock, *self.conns):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self.threads:
            t.join(5)

    close = stop
