"""``parse_proc_net_tcp`` and ``held_connections``: what LocalProxy.stop waits on before it stops nginx (whose
SIGQUIT, as one process, drops a request still in flight from the access log)."""

# ruff: noqa: E501  (the sample lines are /proc/net/tcp as the kernel writes them)
from __future__ import annotations

import os
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_wsgi502.services.process import held_connections, parse_proc_net_tcp, wait_connections_closed

SAMPLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1122 1 000000000c0cf89e 100 0 0 10 0
   1: 0100007F:93B4 0100007F:BC51 06 00000000:00000000 03:00001690 00000000     0        0 0 3 0000000020e3452d
"""
SAMPLE6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 0 10 -1
"""


def test_reads_port_state_and_inode_of_each_socket_line() -> None:
    assert parse_proc_net_tcp(SAMPLE) == [(2024, 10, 1122), (37812, 6, 0)]
    assert parse_proc_net_tcp(SAMPLE6) == [(8080, 1, 4242)]


@settings(max_examples=300, derandomize=True, database=None)
@given(st.text(alphabet=st.sampled_from("0123456789ABCDEF: \n-xz"), max_size=300))
def test_any_text_gives_a_list_of_sane_triples_and_no_exception(text: str) -> None:
    for port, state, inode in parse_proc_net_tcp(text):
        assert 0 <= port <= 65535 and 0 <= state <= 255 and inode >= 0


@settings(max_examples=200, derandomize=True, database=None)
@given(st.integers(0, 65535), st.integers(0, 255), st.integers(0, 2**40))
def test_a_well_formed_line_round_trips(port: int, state: int, inode: int) -> None:
    line = f"   7: 0100007F:{port:04X} 0100007F:1234 {state:02X} 00000000:00000000 00:00000000 00000000  0  0 {inode} 1"
    assert parse_proc_net_tcp(SAMPLE.splitlines()[0] + "\n" + line) == [(port, state, inode)]


def test_counts_this_process_connections_on_its_port_and_not_the_listener() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        assert held_connections(os.getpid(), port) == 0
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        assert held_connections(os.getpid(), port) == 1  # the accepted side; the client's local port differs
        accepted.close()
        client.close()
        assert wait_connections_closed(os.getpid(), port, 2.0) == 0
    finally:
        server.close()


def test_a_process_that_is_gone_holds_nothing() -> None:
    assert held_connections(2**22 + 12345, 80) == 0
