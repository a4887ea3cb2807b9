"""A port the API replica served can be bound again while a connection it dropped is still closing."""

from __future__ import annotations

import socket

import pytest

from deploy.direct_ingress import rebindable_after_crash

_clients: list[socket.socket] = []  # connections the test's client keeps open until the process ends


def _drop_a_connection(make_socket) -> int:
    """Serves one connection on a fresh port with a socket made as Ray Serve makes it, then dies with the
    client still connected: the server's end stays on the port in FIN-WAIT-2. Returns the port."""
    listener = make_socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()
    listener.close()
    _clients.append(client)
    return port


def _can_bind(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and `tuneserve up` do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def http_util():
    from ray.serve._private import http_util

    return http_util


def test_a_port_left_by_a_plain_socket_cannot_be_bound_until_the_connection_is_gone() -> None:
    # Ray Serve's direct ingress as it ships: this is what kept a crashed stack from restarting.
    assert not _can_bind(_drop_a_connection(socket.socket))


def test_after_the_fix_the_port_can_be_bound_at_once(http_util) -> None:
    rebindable_after_crash()
    rebindable_after_crash()  # idempotent
    assert _can_bind(_drop_a_connection(http_util.socket.socket))
    assert http_util.socket.AF_INET == socket.AF_INET  # the rest of the module as it was
