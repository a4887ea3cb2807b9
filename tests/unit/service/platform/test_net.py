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


def test_a_port_to_be_bound_later_is_never_chosen(monkeypatch) -> None:
    """The stack's API port is free while the stack chooses its other ports (its replica binds it later):
    in a range of 201 ports where 200 are to be avoided, the one left is chosen every time."""
    from service.platform import net

    monkeypatch.setattr(net, "LOWEST_PORT", 27000)
    monkeypatch.setattr(net, "ephemeral_ports", lambda: (27201, 60999))
    avoid = set(range(27000, 27201)) - {27123}
    chosen = {net.free_port(avoid=avoid) for _ in range(5)} | set(net.free_ports(1, avoid=avoid))
    assert chosen.isdisjoint(avoid), chosen
