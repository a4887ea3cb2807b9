"""Free ports for the stack's servers: distinct, bindable, and outside the range the kernel hands to
outgoing connections (which could take a port between its choice and the server's bind)."""

from __future__ import annotations

import socket

from service.platform.net import ephemeral_ports, free_port, free_ports, listening


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low, _ = ephemeral_ports()
    for _ in range(20):
        ports = free_ports(6)
        assert len(set(ports)) == 6 and all(20000 <= p < low for p in ports), ports
        for port in ports:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
    assert 20000 <= free_port() < low


def test_a_listening_port_is_seen_and_not_chosen() -> None:
    with socket.socket() as server:
        port = free_port()
        server.bind(("127.0.0.1", port))
        server.listen()
        assert listening("127.0.0.1", port)
        assert port not in {p for _ in range(50) for p in free_ports(4)}
