"""TLS credentials from certificate files: server side (optionally requiring client
certificates: mutual TLS) and client side; a server listening with them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc

from policies.errors import GRPC_BIND_FAILED, InputError, ListenError


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read: {exc.strerror}") from exc


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    """TLS with `cert`/`key`; with `client_ca`, every client must present a certificate
    signed by it (mutual TLS)."""
    pair = (_read(key, "TLS key"), _read(cert, "TLS certificate"))
    if client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read(client_ca, "client CA"), require_client_auth=True
    )


def listen(
    server: grpc.Server,
    address: str,
    cert: Path | None,
    key: Path | None,
    client_ca: Path | None,
) -> int:
    """Have `server` listen on `address`, with TLS when `cert` and `key` are given; the
    port bound. An address it cannot bind is a ListenError naming it."""
    try:
        if cert is not None and key is not None:
            port = server.add_secure_port(address, server_credentials(cert, key, client_ca))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # newer grpcio raises where older ones returned 0
        port = 0
    if port == 0:
        raise ListenError(address, GRPC_BIND_FAILED)
    return int(port)


def channel_credentials(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Trust `ca` (the system roots when None); present `cert`/`key` for mutual TLS."""
    if (cert is None) != (key is None):
        raise InputError("--cert and --key go together (mutual TLS)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA certificate") if ca else None,
        private_key=_read(key, "TLS key") if key else None,
        certificate_chain=_read(cert, "TLS certificate") if cert else None,
    )


def address_host(address: str) -> str:
    """The host part of a gRPC `host:port` address (`[v6]:port` too)."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    host, sep, _port = address.rpartition(":")
    return host if sep else address


def is_loopback(address: str) -> bool:
    """True when `address` (host:port, or a unix socket) only reaches this machine."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address_host(address.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:"))
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
