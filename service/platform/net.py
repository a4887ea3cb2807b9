"""Ports on this host: free ones to bind, and whether something listens."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection
from pathlib import Path

# Above Ray's default worker ports (10002-19999: every Ray worker process listens on one).
LOWEST_PORT = 20000


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    return free_ports(1, host, avoid)[0]


def free_ports(n: int, host: str = "127.0.0.1", avoid: Collection[int] = ()) -> list[int]:
    """`n` different ports free now, for servers that bind them a little later (Ray's components, rclone,
    the API). They are chosen below the kernel's ephemeral range: a port from that range (what binding
    port 0 gives) can be taken meanwhile by any outgoing connection on the machine, and a Ray agent then
    fails with "Address already in use" (seen on a busy machine running several stacks); below it (and
    above Ray's worker ports) only another server can take it. The n sockets are held together, so no
    port is returned twice. `avoid`: ports free now that a server will bind later (the stack's own API
    port, bound by its replica half a minute after the stack's other ports are chosen: one of them once
    took it, and the API could not start)."""
    low, high = LOWEST_PORT, ephemeral_ports()[0] - 1
    rng = random.SystemRandom()
    sockets: list[socket.socket] = []
    try:
        for _ in range(n * 100):
            if len(sockets) == n or high - low < 100 * n:
                break
            port = rng.randint(low, high)
            if port in avoid:
                continue
            sock = socket.socket()
            try:
                sock.bind((host, port))
            except OSError:  # taken
                sock.close()
                continue
            sockets.append(sock)
        while len(sockets) < n:  # no room below the ephemeral range: let the kernel choose
            sock = socket.socket()
            sock.bind((host, 0))
            if sock.getsockname()[1] in avoid:
                sock.close()
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux; its default elsewhere)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True
