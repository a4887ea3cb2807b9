"""The API replica's own HTTP server (Ray Serve's direct ingress), made rebindable right after a crash.

Ray Serve binds a direct-ingress replica's port without SO_REUSEADDR (`ray/serve/_private/replica.py` passes
`enable_so_reuseport=False` to `http_util.start_asgi_http_server`). A connection that is open when the
replica dies (its process killed, or the whole stack's) leaves an orphaned socket on the port in FIN-WAIT-2
for up to a minute (`net.ipv4.tcp_fin_timeout`), and without SO_REUSEADDR on both sockets nothing can bind
the port until it is gone: neither the replica Serve restarts nor a stack restarted by `tuneserve up`
(tests/integration/service/stack/test_durability.py failed on exactly that). Every HTTP server sets it
(uvicorn, and Serve's own proxy); SO_REUSEPORT, which would let a second process listen on the same port
at once, stays off.
"""

from __future__ import annotations

import socket
import types


class _ReuseAddrSocket(socket.socket):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def rebindable_after_crash() -> None:
    """Every socket Ray Serve's HTTP helpers create in this process gets SO_REUSEADDR. Call it in the
    ingress replica's constructor: Serve starts the replica's server only after the constructor ran."""
    from ray.serve._private import http_util

    if isinstance(http_util.socket, types.SimpleNamespace):
        return  # already done in this process
    module = {name: getattr(socket, name) for name in dir(socket) if not name.startswith("__")}
    http_util.socket = types.SimpleNamespace(**{**module, "socket": _ReuseAddrSocket})
