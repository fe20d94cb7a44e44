"""The small HTTP servers of the daemon and the meter (metrics and health), on an IPv4 or
an IPv6 address alike."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import ThreadingWSGIServer


def wsgi_server(
    address: str, port: int, app: Callable[..., Any], handler: type[WSGIRequestHandler]
) -> WSGIServer:
    """A threading WSGI server bound to `address:port` in the address's family. wsgiref's
    server is IPv4 only: on an IPv6-only cluster the kubelet's probes found nothing on
    the pod's address, and `--metrics-address ::` failed ("Address family for hostname
    not supported")."""
    found = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family = found[0][0]

    class Server(ThreadingWSGIServer):
        address_family = family

    return make_server(address, port, app, server_class=Server, handler_class=handler)
